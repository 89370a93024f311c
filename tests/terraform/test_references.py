"""The part of `terraform validate` that needs no provider: every reference resolves.

validate cannot run here (no Google provider), so these tests check what it would say about
our own names: each var.X is declared, each module call passes only declared inputs and every
required one, and each module.X.Y names an output that exists.
"""

from __future__ import annotations

import os
import re

from conftest import TF

META = {"source", "count", "for_each", "depends_on", "providers", "version"}


def code(text: str) -> str:
    """The text without comments and without moved blocks: a moved block's `from` names an address
    of the old state on purpose, which validate does not resolve (its `to` is checked below too)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"(?ms)^moved \{.*?^\}", "", "\n".join(lines))


def test_moved_blocks_lead_to_called_modules(configs):
    moves = 0
    for c in configs.values():
        text = "\n".join(line for line in c.text.splitlines() if not line.lstrip().startswith("#"))
        for block in re.findall(r"(?ms)^moved \{.*?^\}", text):
            moves += 1
            target_ = re.search(r"^\s*to\s*=\s*module\.([A-Za-z0-9_]+)\s*$", block, re.M)
            assert target_ and target_.group(1) in c.modules, f"{c.directory}: {block}"
    assert moves >= 7, "envs/app carries the former module.stack state over with moved blocks"


def target(c, call):
    return os.path.normpath(os.path.join(c.directory, call["source"]))


def test_every_var_reference_is_declared(configs):
    checked = 0
    for c in configs.values():
        for name in set(re.findall(r"\bvar\.([A-Za-z0-9_]+)", code(c.text))):
            checked += 1
            assert name in c.variables, f"{c.directory}: var.{name} is not declared"
    assert checked > 100


def test_every_local_reference_is_declared(configs):
    for c in configs.values():
        for name in set(re.findall(r"\blocal\.([A-Za-z0-9_]+)", code(c.text))):
            assert name in c.locals, f"{c.directory}: local.{name} is not declared"


def test_module_calls_pass_exactly_declared_inputs_and_every_required_one(configs):
    calls = 0
    for c in configs.values():
        for name, call in c.modules.items():
            calls += 1
            t = target(c, call)
            assert t in configs, f"{c.directory} module.{name}: no module at {t}"
            declared = configs[t].variables
            passed = set(call) - META
            assert passed <= set(declared), f"{c.directory} module.{name}: unknown inputs {passed - set(declared)}"
            required = {v for v, body in declared.items() if "default" not in body}
            assert required <= passed, f"{c.directory} module.{name}: missing inputs {required - passed}"
    assert calls >= 15


def test_every_module_output_reference_exists(configs):
    for c in configs.values():
        for mod, out in set(re.findall(r"\bmodule\.([A-Za-z0-9_]+)(?:\[[0-9]+\])?\.([A-Za-z0-9_]+)", code(c.text))):
            assert mod in c.modules, f"{c.directory}: module.{mod} is not called"
            t = target(c, c.modules[mod])
            if out not in configs[t].outputs and out.startswith(("google_", "datadog_")):  # import blocks
                assert any(r.type == out for r in configs[t].resources), f"{c.directory}: module.{mod}.{out}"
                continue
            assert out in configs[t].outputs, f"{c.directory}: module.{mod}.{out} is not an output of {t}"


def test_every_directory_is_checked():
    seen = {os.path.relpath(os.path.join(TF, d), TF) for d in os.listdir(os.path.join(TF, "modules"))}
    assert len(seen) >= 14
