"""Loads every .tf file under terraform/ with python-hcl2 into plain Python values.

python-hcl2 keeps the quotes of block labels and string literals ("\"google_pubsub_topic\"")
and marks blocks with __is_block__; `unquote` turns that into ordinary dicts and strings so the
tests read like the HCL they check. Expressions stay as their source text ("${var.image}").
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field

import hcl2
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TF = os.path.join(REPO, "terraform")


def unquote(value):
    if isinstance(value, dict):
        return {
            unquote(k): unquote(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def comments(value) -> list[str]:
    """Every comment attached anywhere inside a parsed block (checkov skips live there)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("__comments__", "__inline_comments__"):
                out += [c.get("value", "") for c in v]
            else:
                out += comments(v)
    elif isinstance(value, list):
        for v in value:
            out += comments(v)
    return out


@dataclass
class Resource:
    directory: str  # relative to terraform/, e.g. modules/pubsub
    type: str
    name: str
    body: dict
    comments: list[str]

    @property
    def address(self) -> str:
        return f"{self.directory}:{self.type}.{self.name}"


@dataclass
class Config:
    directory: str
    files: dict = field(default_factory=dict)  # file name -> raw text
    resources: list = field(default_factory=list)
    data: list = field(default_factory=list)
    variables: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    locals: dict = field(default_factory=dict)
    terraform: list = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.files.values())


def load_dir(path: str) -> Config:
    cfg = Config(directory=os.path.relpath(path, TF))
    for f in sorted(glob.glob(os.path.join(path, "*.tf"))):
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        cfg.files[os.path.basename(f)] = text
        with open(f, encoding="utf-8") as fh:
            raw = hcl2.load(fh)
        for block in raw.get("resource", []):
            for rtype, named in block.items():
                for rname, body in named.items():
                    cfg.resources.append(Resource(cfg.directory, unquote(rtype), unquote(rname), unquote(body), comments(body)))
        for block in raw.get("data", []):
            for rtype, named in block.items():
                for rname, body in named.items():
                    cfg.data.append(Resource(cfg.directory, unquote(rtype), unquote(rname), unquote(body), comments(body)))
        for block in raw.get("variable", []):
            for name, body in block.items():
                cfg.variables[unquote(name)] = unquote(body)
        for block in raw.get("output", []):
            for name, body in block.items():
                cfg.outputs[unquote(name)] = unquote(body)
        for block in raw.get("module", []):
            for name, body in block.items():
                cfg.modules[unquote(name)] = unquote(body)
        for block in raw.get("locals", []):
            cfg.locals.update(unquote(block))
        cfg.terraform += unquote(raw.get("terraform", []))
    return cfg


# The service's one composition (terraform/envs/app) and the environments it is applied with:
# each has <env>.tfvars (its values) and <env>.backend.hcl (where its state lives).
APP = "envs/app"
ENVIRONMENTS = ("dev", "prod")


def load_hcl_file(path: str) -> dict:
    """A .tfvars or backend .hcl file: top-level attributes only, as plain Python values."""
    with open(path, encoding="utf-8") as fh:
        return unquote(hcl2.load(fh))


def env_values(env: str) -> dict:
    return load_hcl_file(os.path.join(TF, APP, f"{env}.tfvars"))


def backend_config(env: str) -> dict:
    return load_hcl_file(os.path.join(TF, APP, f"{env}.backend.hcl"))


def all_dirs() -> list[str]:
    dirs = sorted(glob.glob(os.path.join(TF, "modules", "*"))) + sorted(glob.glob(os.path.join(TF, "envs", "*")))
    dirs.append(os.path.join(TF, "bootstrap"))
    return [d for d in dirs if glob.glob(os.path.join(d, "*.tf"))]


@pytest.fixture(scope="session")
def configs() -> dict[str, Config]:
    return {os.path.relpath(d, TF): load_dir(d) for d in all_dirs()}


@pytest.fixture(scope="session")
def resources(configs) -> list[Resource]:
    return [r for c in configs.values() for r in c.resources]


def blocks(value) -> list[dict]:
    """A nested block parses as a list of dicts; an absent one as nothing."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)]


def var_name(expr) -> str | None:
    m = re.fullmatch(r"\$\{var\.([A-Za-z0-9_]+)\}", expr) if isinstance(expr, str) else None
    return m.group(1) if m else None


def read_json(rel: str):
    with open(os.path.join(REPO, rel), encoding="utf-8") as fh:
        return json.load(fh)
