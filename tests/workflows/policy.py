"""The rules the workflows and the container image must keep, as functions that return the list of
violations (empty when the file complies). test_workflows.py applies them to the real files;
test_policy.py feeds them broken examples, so that each rule is seen to fail when it should.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONS = ROOT / ".github" / "actions"

SHA_PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+(\.\d+){0,2}\b")
LOCAL = ("$/", "./")
# Ways a long-lived Google key gets into a job: the auth action's key input, the variables that
# point client libraries or gcloud at a key file, gcloud's key-file login.
JSON_KEY_INPUTS = {"credentials_json"}
JSON_KEY_ENV = {"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS", "GCP_SA_KEY", "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"}
JSON_KEY_COMMANDS = re.compile(r"activate-service-account|--key-file|key\.json|keyfile|credentials\.json", re.I)
SECRET_LIKE = re.compile(r"secrets\.[A-Za-z0-9_]*(KEY|JSON|CREDENTIAL|SERVICE_ACCOUNT)[A-Za-z0-9_]*", re.I)
AUTH_ACTION = "google-github-actions/auth@"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def triggers(doc: dict) -> dict:
    """The `on:` mapping (PyYAML reads the bare key `on` as the boolean True)."""
    on = doc.get("on", doc.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {name: None for name in on}
    return on or {}


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def action_files() -> list[Path]:
    return sorted(ACTIONS.glob("*/action.yml")) + sorted(ACTIONS.glob("*/action.yaml"))


def steps_of(doc: dict) -> Iterator[tuple[str, dict]]:
    """(job id, step) for every step of a workflow, or ('', step) for a composite action."""
    if "runs" in doc:
        for step in doc["runs"].get("steps", []) or []:
            yield "", step
        return
    for job_id, job in (doc.get("jobs") or {}).items():
        for step in job.get("steps", []) or []:
            yield job_id, step


def uses_of(doc: dict) -> Iterator[tuple[str, str]]:
    """(where, uses) for every step-level and job-level `uses:`."""
    for job_id, job in (doc.get("jobs") or {}).items():
        if "uses" in job:
            yield f"job {job_id}", job["uses"]
    for job_id, step in steps_of(doc):
        if "uses" in step:
            yield f"job {job_id or '(composite)'} step {step.get('name') or step['uses']}", step["uses"]


def unpinned_uses(doc: dict, text: str) -> list[str]:
    """Every remote action or reusable workflow not pinned to a full commit SHA, or pinned
    without the `# vX.Y.Z` comment that tells reviewers and Dependabot which release it is."""
    problems = []
    lines = text.splitlines()
    for where, uses in uses_of(doc):
        if uses.startswith(LOCAL):
            continue
        if uses.startswith("docker://"):
            if "@sha256:" not in uses:
                problems.append(f"{where}: {uses} is not pinned by digest")
            continue
        if not SHA_PINNED.match(uses):
            problems.append(f"{where}: {uses} is not pinned to a 40-hex commit SHA")
            continue
        commented = [line for line in lines if uses in line and VERSION_COMMENT.search(line.split(uses, 1)[1])]
        if not commented:
            problems.append(f"{where}: {uses} has no '# vX.Y.Z' comment naming the release")
    return problems


def json_key_uses(doc: dict, text: str) -> list[str]:
    """Anything that authenticates to Google Cloud with a key instead of Workload Identity
    Federation."""
    problems = []
    for job_id, step in steps_of(doc):
        where = f"job {job_id or '(composite)'} step {step.get('name') or step.get('uses') or step.get('run', '')[:40]}"
        with_ = step.get("with") or {}
        if str(step.get("uses", "")).startswith(AUTH_ACTION):
            for key in JSON_KEY_INPUTS & set(with_):
                problems.append(f"{where}: uses the auth action's {key} input (a JSON key)")
            if not with_.get("workload_identity_provider"):
                problems.append(f"{where}: the auth action without workload_identity_provider")
        for key in JSON_KEY_ENV & set(step.get("env") or {}):
            problems.append(f"{where}: sets {key}, which points at a key file")
        if JSON_KEY_COMMANDS.search(str(step.get("run", ""))):
            problems.append(f"{where}: its script handles a key file")
    for scope in [doc] + list((doc.get("jobs") or {}).values()):
        for key in JSON_KEY_ENV & set(scope.get("env") or {}):
            problems.append(f"sets {key} for a whole workflow or job")
    for match in SECRET_LIKE.finditer(text):
        problems.append(f"reads {match.group(0)}: credentials come from Workload Identity Federation, not secrets")
    return problems


def permission_problems(doc: dict) -> list[str]:
    """Least privilege: `permissions: {}` at the top, every job lists its own, `id-token: write`
    only where a job authenticates to Google Cloud (or calls a workflow that does), and
    `contents: write` nowhere but in a job that creates a tag."""
    problems = []
    if doc.get("permissions") != {}:
        problems.append(f"top-level permissions are {doc.get('permissions')!r}, not {{}}")
    for job_id, job in (doc.get("jobs") or {}).items():
        perms = job.get("permissions")
        if perms is None:
            problems.append(f"job {job_id} does not declare its permissions")
            continue
        if perms in ("write-all", "read-all"):
            problems.append(f"job {job_id} has {perms}")
            continue
        steps = job.get("steps") or []
        authenticates = any(str(s.get("uses", "")).startswith(AUTH_ACTION) for s in steps)
        calls = str(job.get("uses", ""))
        if perms.get("id-token") == "write" and not (authenticates or calls):
            problems.append(f"job {job_id} has id-token: write but never authenticates")
        if authenticates and perms.get("id-token") != "write":
            problems.append(f"job {job_id} authenticates without id-token: write")
        for scope, level in perms.items():
            if level == "write" and scope not in ("id-token", "contents"):
                problems.append(f"job {job_id} has {scope}: write")
            if scope == "contents" and level == "write":
                runs = " ".join(str(s.get("run", "")) for s in steps)
                if "create-tag.sh" not in runs:
                    problems.append(f"job {job_id} has contents: write but creates no tag")
    return problems


def checkout_problems(doc: dict) -> list[str]:
    """actions/checkout never leaves the job token in .git/config (zizmor: artipacked)."""
    return [
        f"job {job_id}: checkout keeps the token in .git/config (set persist-credentials: false)"
        for job_id, step in steps_of(doc)
        if str(step.get("uses", "")).startswith("actions/checkout@")
        and (step.get("with") or {}).get("persist-credentials") is not False
    ]


def readme_test_command(readme: str) -> str:
    """The command in the first code block after the README's `## Test` heading (fenced or
    indented), as one string with its lines joined by newlines."""
    lines = readme.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if re.match(r"^##\s+Test\s*$", line))
    except StopIteration:
        raise AssertionError("README.md has no '## Test' heading") from None
    block: list[str] = []
    fenced = False
    for line in lines[start + 1 :]:
        if line.startswith("#") and not fenced:
            break
        if line.strip().startswith("```"):
            if fenced:
                break
            fenced = True
            continue
        if fenced:
            block.append(line.strip())
        elif line.startswith(("    ", "\t")) and line.strip():
            block.append(line.strip())
        elif block and not line.strip():
            break
    command = "\n".join(line for line in block if line and not line.startswith("$ ")) or "\n".join(
        line[2:] for line in block if line.startswith("$ ")
    )
    if not command:
        raise AssertionError("no code block after README.md's '## Test' heading")
    return command


def job_runs(job: dict) -> list[str]:
    return [str(step["run"]).strip() for step in job.get("steps") or [] if "run" in step]


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_stages(text: str) -> list[dict]:
    """The stages of a Dockerfile: base image, name and instructions (continuations joined)."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[dict] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"base": parts[0], "name": name, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((instruction, rest.strip()))
    return stages


REQUIRED_LABELS = ("title", "description", "source", "revision", "version", "created", "licenses")


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    stages = dockerfile_stages(text)
    if len(stages) < 2:
        return ["not a multi-stage build"]
    names = {s["name"] for s in stages if s["name"]}
    for stage in stages:
        base = stage["base"]
        if base not in names and "@sha256:" not in base:
            problems.append(f"base image {base} is not pinned by digest")
    final = stages[-1]
    if not re.match(r"^(gcr\.io/distroless/|scratch$)", final["base"]):
        problems.append(f"the final stage is {final['base']}, not distroless or scratch")
    users = [rest for instr, rest in final["instructions"] if instr == "USER"]
    if not users:
        problems.append("the final stage sets no USER (it would run as root)")
    elif users[-1].split(":")[0] in ("0", "root"):
        problems.append(f"the final stage runs as {users[-1]}")
    labels = " ".join(rest for instr, rest in final["instructions"] if instr == "LABEL")
    for label in REQUIRED_LABELS:
        if f"org.opencontainers.image.{label}=" not in labels:
            problems.append(f"the final stage lacks the OCI label org.opencontainers.image.{label}")
    for stage in stages:
        for instr, rest in stage["instructions"]:
            if instr in ("ENV", "ARG") and re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY|PRIVATE_KEY)\w*\s*=", rest, re.I):
                problems.append(f"{instr} {rest[:60]} looks like a secret baked into the image")
    # The dependency layer: a stage compiles from the recipe before the sources are copied in.
    cached = False
    for stage in stages:
        instructions = stage["instructions"]
        cook = next((i for i, (ins, rest) in enumerate(instructions) if ins == "RUN" and "cargo chef cook" in rest), None)
        copy_all = next((i for i, (ins, rest) in enumerate(instructions) if ins == "COPY" and rest.split()[-2:] == [".", "."]), None)
        build = next((i for i, (ins, rest) in enumerate(instructions) if ins == "RUN" and "cargo build" in rest), None)
        if cook is not None and copy_all is not None and build is not None and cook < copy_all < build:
            cached = True
    if not cached:
        problems.append("no stage builds the dependencies (cargo chef cook) before copying the sources")
    return problems


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore (patterns, in order, `!` re-includes) leaves `path` out of the
    build context. A path is excluded when it or one of its parent directories matches."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates) or fnmatch.fnmatch(path, pattern):
            excluded = not negate
    return excluded


def paths_the_build_reads(root: Path) -> list[str]:
    """Files and folders the release build needs: the manifests, the workspace members, and
    every include_str!/include_bytes! target of the Rust sources."""
    import tomllib

    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    needed = ["Cargo.toml", "Cargo.lock", "src"]
    for member in manifest.get("workspace", {}).get("members", []):
        if member != ".":
            needed.append(member)
    for source in list((root / "src").rglob("*.rs")) + [p for m in needed[3:] for p in (root / m).rglob("*.rs")]:
        for match in re.finditer(r"include_(?:str|bytes)!\(\s*\"([^\"]+)\"", source.read_text(errors="replace")):
            target = (source.parent / match.group(1)).resolve()
            try:
                needed.append(str(target.relative_to(root)))
            except ValueError:
                continue
    return needed
