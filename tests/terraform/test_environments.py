"""Every environment is the one composition (terraform/envs/app) with its own values.

dev and prod used to be two roots repeating main.tf, variables.tf and outputs.tf; a new input of
the service took five edits and the copies could drift. Now an environment is two small files
beside the composition: <env>.tfvars (what differs) and <env>.backend.hcl (where its state lives).
These tests keep it that way, and keep every consumer (workflows, docs, scripts) pointed at it.
"""

from __future__ import annotations

import glob
import os
import re

import yaml

from conftest import APP, ENVIRONMENTS, REPO, TF, backend_config, env_values

# Passed by the workflows on the command line, never written in a values file.
COMMAND_LINE_ONLY = {"image"}


def test_the_environments_share_one_root_and_differ_only_in_values():
    roots = sorted(os.path.basename(os.path.dirname(f)) for f in glob.glob(os.path.join(TF, "envs", "*", "main.tf")))
    assert roots == ["app", "shared"], f"one composition for the service (app) and the shared project: {roots}"
    for env in ENVIRONMENTS:
        for name in (f"{env}.tfvars", f"{env}.backend.hcl"):
            assert os.path.isfile(os.path.join(TF, APP, name)), f"{APP}/{name} is missing"
    stray = [f for f in glob.glob(os.path.join(TF, APP, "*.tfvars")) if os.path.basename(f) not in {f"{e}.tfvars" for e in ENVIRONMENTS}]
    assert stray == [], f"an unexpected values file would be read by nobody (or by accident): {stray}"
    assert not os.path.exists(os.path.join(TF, APP, "terraform.tfvars")), "terraform.tfvars would apply to every environment"


def test_each_environment_sets_only_declared_variables_and_every_required_one(configs):
    declared = configs[APP].variables
    required = {name for name, body in declared.items() if "default" not in body}
    keys = {}
    for env in ENVIRONMENTS:
        values = env_values(env)
        keys[env] = set(values)
        assert set(values) <= set(declared), f"{env}.tfvars sets undeclared variables {set(values) - set(declared)}"
        assert required - COMMAND_LINE_ONLY <= set(values), f"{env}.tfvars misses {required - COMMAND_LINE_ONLY - set(values)}"
        assert not set(values) & COMMAND_LINE_ONLY, f"{env}.tfvars must not pin {set(values) & COMMAND_LINE_ONLY}"
        assert values["env"] == env
    # Both environments set the same inputs, so a value one of them overrides is visible in both.
    assert keys["dev"] == keys["prod"], keys
    projects = {env: env_values(env)["project_id"] for env in ENVIRONMENTS}
    assert len(set(projects.values())) == len(ENVIRONMENTS), projects
    assert COMMAND_LINE_ONLY <= required, "the image has no default: a plan without -var image fails"


def test_each_environment_keeps_its_own_state():
    prefixes = {env: backend_config(env).get("prefix") for env in ENVIRONMENTS}
    assert len(set(prefixes.values())) == len(ENVIRONMENTS), prefixes
    for env in ENVIRONMENTS:
        assert set(backend_config(env)) == {"prefix"}, f"{env}.backend.hcl: only the prefix (the bucket comes from TF_STATE_BUCKET)"


def runs(path: str):
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    for job in (doc.get("jobs") or {}).values():
        for step in job.get("steps") or []:
            if "run" in step:
                yield step["run"]


def terraform_commands(run: str):
    """Each terraform command line of a run: block, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", run)
    return [line.strip() for line in text.splitlines() if re.search(r"\bterraform -chdir=", line)]


def test_the_workflows_init_and_plan_each_environment_with_its_own_files():
    seen = {"init": 0, "plan": 0, "apply": 0}
    for path in sorted(glob.glob(os.path.join(REPO, ".github", "workflows", "*.yml"))):
        for run in runs(path):
            for cmd in terraform_commands(run):
                name = os.path.basename(path)
                if "terraform/envs/*/" in run and '"$dir"' in cmd:
                    continue  # the validate loop: init -backend=false and validate, no environment
                assert 'terraform -chdir="terraform/envs/app"' in cmd or '-chdir="$dir"' in cmd, f"{name}: {cmd}"
                if " init" in cmd:
                    seen["init"] += 1
                    assert '-backend-config="$DEPLOY_ENV.backend.hcl"' in cmd, f"{name}: init without the environment's backend file: {cmd}"
                    assert '-backend-config="bucket=$TF_STATE_BUCKET"' in cmd, f"{name}: {cmd}"
                if " plan " in cmd:
                    seen["plan"] += 1
                    assert '-var-file="$DEPLOY_ENV.tfvars"' in cmd, f"{name}: plan without the environment's values: {cmd}"
                    assert '-var "image=$IMAGE"' in cmd, f"{name}: {cmd}"
                if " apply " in cmd:
                    seen["apply"] += 1
                    assert cmd.endswith("apply tfplan"), f"{name}: apply anything but the reviewed plan: {cmd}"
    # terraform.yml plans both environments; deploy.yml plans, then applies in another job.
    assert seen["init"] >= 3 and seen["plan"] >= 2 and seen["apply"] >= 1, seen


def test_nothing_points_at_the_former_per_environment_roots():
    former = re.compile(r"envs/(dev|prod)\b")
    places = [os.path.join(REPO, "README.md")]
    for top in (".github", "docs", "scripts", "terraform", os.path.join("tests", "workflows")):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            if "/.terraform" in root:
                continue
            places += [os.path.join(root, f) for f in files if f.endswith((".md", ".yml", ".yaml", ".sh", ".py", ".tf", ".hcl", ".tfvars"))]
    assert len(places) > 50
    stale = []
    for path in places:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if former.search(line):
                    stale.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
    assert stale == [], "still pointing at terraform/envs/dev or envs/prod:\n" + "\n".join(stale)
