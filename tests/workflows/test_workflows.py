"""The workflows in .github/ and the Dockerfile keep the pipeline's promises (docs/ci-cd.md)."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

import policy
from policy import ROOT, load

WORKFLOWS = policy.workflow_files()
ACTIONS = policy.action_files()
ALL = WORKFLOWS + ACTIONS


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def workflow(name: str) -> dict:
    return load(ROOT / ".github" / "workflows" / name)


def test_the_expected_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "deliver-dev.yml", "deploy.yml", "promote-prod.yml", "rollback.yml", "terraform.yml"} <= names


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_every_action_is_pinned_by_commit_sha(path):
    assert policy.unpinned_uses(load(path), path.read_text()) == []


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_no_workflow_authenticates_with_a_json_key(path):
    assert policy.json_key_uses(load(path), path.read_text()) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_permissions_are_least_privilege(path):
    assert policy.permission_problems(load(path)) == []


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_checkouts_do_not_persist_the_token(path):
    assert policy.checkout_problems(load(path)) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_every_workflow_or_its_deploying_jobs_have_a_concurrency_group(path):
    doc = load(path)
    on = policy.triggers(doc)
    if set(on) == {"workflow_call"}:
        # Only called: its callers hold the workflow-level group, and every job that changes an
        # environment (one whose environment is not `-readonly`) holds one per environment,
        # shared by every caller. A called workflow that changes nothing needs none.
        changing = [j for j in doc["jobs"].values() if "environment" in j and not str(j["environment"]).endswith("-readonly")]
        assert changing or path.name == "budget-gate.yml", f"{path.name} changes nothing: say why it is only called"
        for job in changing:
            assert job["concurrency"]["group"] == "terraform-${{ inputs.environment }}"
            assert job["concurrency"]["cancel-in-progress"] is False
    else:
        assert "group" in doc.get("concurrency", {}), f"{path.name} has no concurrency group"


def test_the_test_job_runs_exactly_the_readme_test_command():
    command = policy.readme_test_command((ROOT / "README.md").read_text())
    assert command == "make test"  # what docs/ci-cd.md and .ci/run promise too
    test_job = workflow("ci.yml")["jobs"]["test"]
    assert command in policy.job_runs(test_job)
    # As root, as .ci/run runs it on the project's machines; the files go back to the runner.
    step = next(s for s in test_job["steps"] if str(s.get("run", "")).strip() == command)
    assert step["shell"] == "bash .github/scripts/as-root.sh {0}"
    chown = next(s for s in test_job["steps"] if "chown" in str(s.get("run", "")))
    assert chown["if"] == "always()"


def test_the_lint_job_runs_the_same_fmt_and_clippy_as_the_test_command():
    script = (ROOT / "scripts" / "test.sh").read_text()
    script_cargo = [line.strip() for line in script.splitlines() if line.strip().startswith(("cargo fmt", "cargo clippy"))]
    lint_runs = policy.job_runs(workflow("ci.yml")["jobs"]["lint"])
    assert len(script_cargo) == 2
    assert lint_runs == script_cargo


def test_lint_and_test_run_in_parallel_and_smoke_tests_the_tested_binary():
    jobs = workflow("ci.yml")["jobs"]
    assert "needs" not in jobs["lint"] and "needs" not in jobs["test"]
    assert jobs["smoke"]["needs"] == "test"
    smoke_runs = " ".join(policy.job_runs(jobs["smoke"]))
    assert ".github/scripts/smoke-local.sh dist/challenge-latam-api" in smoke_runs
    assert "loadtests/run.sh smoke --url" in (ROOT / ".github" / "scripts" / "smoke-local.sh").read_text()


def test_ci_runs_on_pull_requests_and_before_every_push_pipeline():
    ci = policy.triggers(workflow("ci.yml"))
    assert set(ci["pull_request"]["branches"]) == {"develop", "main"}
    assert "workflow_call" in ci
    for name, branch in (("deliver-dev.yml", "develop"), ("promote-prod.yml", "main")):
        doc = workflow(name)
        assert policy.triggers(doc)["push"]["branches"] == [branch]
        assert doc["jobs"]["ci"]["uses"] == "$/.github/workflows/ci.yml"


def test_gitflow_is_enforced_main_takes_develop_only_and_updates_go_to_develop():
    jobs = workflow("ci.yml")["jobs"]
    assert "github.base_ref == 'main'" in jobs["gitflow"]["if"]
    assert '"$HEAD_REF" != develop' in policy.job_runs(jobs["gitflow"])[0]
    assert "github.base_ref == 'develop'" in jobs["commits"]["if"]
    updates = load(ROOT / ".github" / "dependabot.yml")["updates"]
    assert updates and all(u["target-branch"] == "develop" for u in updates)


def test_delivery_order_is_ci_build_and_budget_gate_deploy_then_release():
    jobs = workflow("deliver-dev.yml")["jobs"]
    assert jobs["build"]["needs"] == "ci"
    assert set(jobs["deploy"]["needs"]) == {"build", "budget-gate"}
    assert set(jobs["release"]["needs"]) == {"build", "deploy"}
    assert jobs["deploy"]["with"] == {"environment": "dev", "image": "${{ needs.build.outputs.image }}", "verify": True}


def test_the_image_deployed_is_the_pushed_digest():
    build = workflow("deliver-dev.yml")["jobs"]["build"]
    runs = " ".join(policy.job_runs(build))
    assert "steps.push.outputs.digest" in str(build["steps"])
    assert "challenge-latam-api@$DIGEST" in runs
    plan = workflow("deploy.yml")["jobs"]["plan"]
    guard = policy.job_runs(plan)[0]
    assert "@sha256:[0-9a-f]{64}$" in guard, "deploy.yml must refuse an image that is not by digest"


def test_prod_gets_only_a_released_digest_behind_the_prod_environment():
    promote = workflow("promote-prod.yml")["jobs"]
    assert "build-push-action" not in str(promote), "promotion must not build a new image"
    assert "semver.py promotable" in " ".join(policy.job_runs(promote["resolve"]))
    assert promote["deploy"]["with"]["environment"] == "prod"
    assert promote["deploy"]["with"]["image"] == "${{ needs.resolve.outputs.image }}"
    apply = workflow("deploy.yml")["jobs"]["apply"]
    assert apply["environment"]["name"] == "${{ inputs.environment }}"
    assert apply["needs"] == "plan"
    assert "apply tfplan" in " ".join(policy.job_runs(apply))


def test_rollback_redeploys_a_previous_tag_through_the_same_deploy():
    doc = workflow("rollback.yml")
    inputs = policy.triggers(doc)["workflow_dispatch"]["inputs"]
    assert inputs["environment"]["options"] == ["dev", "prod"]
    assert doc["jobs"]["deploy"]["uses"] == "$/.github/workflows/deploy.yml"
    assert "resolve-image.sh" in " ".join(policy.job_runs(doc["jobs"]["resolve"]))


def test_post_deploy_runs_the_one_integration_suite_against_the_url():
    verify = workflow("deploy.yml")["jobs"]["verify"]
    steps = {s.get("name"): s for s in verify["steps"]}
    suite = steps["Black-box suite against the deployed URL"]
    assert suite["run"] == "cargo test --release --locked --workspace --test api"
    # The suite authenticates with the workload identity's OIDC token, not the static key.
    assert set(suite["env"]) == {"TEST_BASE_URL", "TEST_API_KEY", "TEST_ID_TOKEN"}
    assert suite["env"]["TEST_API_KEY"] == ""
    assert suite["env"]["TEST_ID_TOKEN"] == "${{ steps.oidctoken.outputs.id_token }}"
    oidc = steps["Identity token for the app (OIDC)"]["with"]
    assert oidc["token_format"] == "id_token"
    assert oidc["id_token_audience"] == "challenge-latam-api-${{ inputs.environment }}"
    assert "TEST_API_KEY=" in steps["Test API key from Secret Manager"]["run"]
    assert "::add-mask::" in steps["Test API key from Secret Manager"]["run"]
    k6 = steps["k6 smoke with the SLO thresholds"]
    assert k6["run"] == 'API_KEYS="$TEST_API_KEY" loadtests/run.sh smoke --url "$SERVICE_URL"'
    assert set(k6["env"]) == {"ID_TOKEN"}


def test_the_suite_and_the_smoke_runner_that_the_workflows_call_exist():
    # `cargo test --test api` in deploy.yml is the suite `make test` runs locally: one suite.
    api = [ROOT / "tests" / "api.rs", ROOT / "tests" / "api" / "main.rs"]
    assert any(p.exists() for p in api), "tests/api (the black-box suite deploy.yml runs) is missing"
    runner = ROOT / "loadtests" / "run.sh"
    assert runner.exists(), "loadtests/run.sh (the k6 runner ci.yml and deploy.yml call) is missing"
    # The runner (run.sh, or the run.py it hands over to) knows the smoke scenario.
    sources = [runner] + sorted(runner.parent.glob("*.py"))
    assert any("smoke" in p.read_text() for p in sources), "loadtests/run.sh has no smoke scenario"


def test_every_terraform_run_gets_the_datadog_keys_before_terraform_starts():
    # The Datadog provider reads DD_API_KEY/DD_APP_KEY at plan and apply time.
    for name, job in (("deploy.yml", "plan"), ("deploy.yml", "apply"), ("terraform.yml", "plan")):
        runs = policy.job_runs(workflow(name)["jobs"][job])
        keys = next(i for i, r in enumerate(runs) if "datadog-keys.sh" in r)
        first_terraform = next(i for i, r in enumerate(runs) if r.startswith("terraform") or "terraform -chdir" in r)
        assert keys < first_terraform, f"{name} {job}"


def test_terraform_plans_on_pull_requests_that_touch_terraform():
    doc = workflow("terraform.yml")
    pr = policy.triggers(doc)["pull_request"]
    assert "terraform/**" in pr["paths"]
    assert doc["jobs"]["plan"]["strategy"]["matrix"]["environment"] == ["dev", "prod"]
    assert doc["jobs"]["plan"]["environment"] == "${{ matrix.environment }}-readonly"
    assert "-lock=false" in " ".join(policy.job_runs(doc["jobs"]["plan"]))


def test_every_terraform_version_is_the_same():
    versions = set()
    for path in WORKFLOWS:
        versions |= set(re.findall(r'TERRAFORM_VERSION: "([^"]+)"', path.read_text()))
    assert len(versions) == 1, versions


def test_the_dockerfile_builder_uses_the_ci_toolchain_and_satisfies_rust_version():
    dockerfile = (ROOT / "Dockerfile").read_text()
    docker_rust = re.search(r"^FROM rust:(\d+\.\d+\.\d+)-", dockerfile, re.M).group(1)
    setup = load(ROOT / ".github" / "actions" / "setup" / "action.yml")
    assert setup["inputs"]["toolchain"]["default"] == docker_rust
    minimum = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["rust-version"]
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(docker_rust)[:2] >= as_tuple(minimum)[:2]


def test_the_dockerfile_is_multi_stage_small_non_root_and_labelled():
    assert policy.dockerfile_problems((ROOT / "Dockerfile").read_text()) == []


def test_the_dockerignore_keeps_everything_the_build_reads():
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    needed = policy.paths_the_build_reads(ROOT)
    assert "Cargo.lock" in needed and "src" in needed
    assert [p for p in needed if policy.dockerignore_excludes(patterns, p)] == []
    for heavy in ("target", ".git", ".tools", "data"):
        assert policy.dockerignore_excludes(patterns, heavy), f"{heavy} would be sent to the builder"


def test_the_build_context_is_a_loadable_cargo_workspace(tmp_path):
    # What `COPY . .` sends to the builder: the repository's files minus .dockerignore. Cargo
    # must load every manifest from it (workspace members and declared targets present) with the
    # committed lock file, as `cargo build --locked` in the Dockerfile will.
    import shutil
    import subprocess

    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()
    context = [p for p in listed if (ROOT / p).is_file() and not policy.dockerignore_excludes(patterns, p)]
    assert "Cargo.lock" in context and not any(p.startswith(("target/", ".git/", ".github/")) for p in context)
    for path in context:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, tmp_path / path)
    done = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked", "--offline"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "challenge-latam-api" in done.stdout


def test_no_new_image_reaches_dev_or_prod_without_passing_the_budget_gate_of_its_source():
    for name, environments, ref in (("deliver-dev.yml", ["dev"], "refs/heads/develop"),
                                    ("promote-prod.yml", ["dev", "prod"], "refs/heads/main")):
        doc = workflow(name)
        gate = doc["jobs"]["budget-gate"]
        assert gate["uses"] == "$/.github/workflows/budget-gate.yml"
        assert json.loads(gate["with"]["environments"]) == environments
        assert gate["with"]["ref"] == ref
        # The override is a dispatch input whose reason the gate logs; a push passes none.
        assert gate["with"]["override"] == "${{ inputs.budget_override || '' }}"
        assert policy.triggers(doc)["workflow_dispatch"]["inputs"]["budget_override"]["required"] is True
        assert "budget-gate" in doc["jobs"]["deploy"]["needs"]
    gate = workflow("budget-gate.yml")["jobs"]["gate"]
    assert gate["environment"] == "${{ matrix.environment }}-readonly"
    runs = policy.job_runs(gate)
    assert '"$GITHUB_REF" != "$EXPECTED_REF"' in runs[0], "a dispatch from another branch must be refused first"
    assert runs[-1] == '.github/scripts/budget-gate.sh check "$GATE_ENV" --override "$OVERRIDE"'
    rollback = workflow("rollback.yml")["jobs"]
    assert "budget-gate" not in rollback and "watch_minutes" not in rollback["deploy"]["with"], \
        "a rollback is the mitigation: never gated by the budget, never rolled back itself"


def test_a_burn_in_the_prod_verification_window_rolls_back_to_the_image_that_ran_before():
    assert workflow("promote-prod.yml")["jobs"]["deploy"]["with"]["watch_minutes"] == 15
    jobs = workflow("deploy.yml")["jobs"]
    before = next(s for s in jobs["plan"]["steps"] if s.get("id") == "before")
    assert "running-image.sh" in before["run"] and "budget-gate.sh report" in before["run"]
    # The baseline is taken before the apply; the watch ignores only it.
    assert jobs["plan"]["steps"].index(before) < next(i for i, s in enumerate(jobs["plan"]["steps"]) if "terraform" in str(s.get("run", "")))
    watch = jobs["watch"]
    assert set(watch["needs"]) == {"plan", "apply"} and watch["environment"].endswith("-readonly")
    assert '--ignore "$BASELINE"' in policy.job_runs(watch)[0]
    assert watch["steps"][-1]["env"]["BASELINE"] == "${{ needs.plan.outputs.page_burns }}"
    rollback_plan, rollback = jobs["rollback-plan"], jobs["rollback"]
    assert rollback_plan["if"] == "needs.watch.outputs.rollback == 'true'"
    assert rollback_plan["env"]["IMAGE"] == "${{ needs.plan.outputs.previous_image }}"
    assert any('-out=tfplan' in r and '-var "image=$IMAGE"' in r for r in policy.job_runs(rollback_plan))
    assert set(rollback["needs"]) == {"plan", "rollback-plan"}
    assert rollback["environment"] == "${{ inputs.environment }}", "the rollback goes through the environment's approval"
    assert rollback["env"]["IMAGE"] == "${{ needs.plan.outputs.previous_image }}"
    runs = policy.job_runs(rollback)
    assert any(r.endswith("apply tfplan") for r in runs), "the rollback applies its reviewed plan"
    assert any('check-rollout.sh "challenge-latam-api-$DEPLOY_ENV" "$IMAGE"' in r for r in runs)
    assert runs[-1].rstrip().endswith("exit 1"), "a rolled-back release ends the run red"
