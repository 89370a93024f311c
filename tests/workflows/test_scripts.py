"""The shell scripts the workflows call, run for real with a stand-in `gcloud` on PATH that
answers what Cloud Run and Artifact Registry would (the only part that needs the cloud)."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import subprocess
from pathlib import Path

import pytest

from policy import ROOT

SCRIPTS = ROOT / ".github" / "scripts"
IMAGE = "us-central1-docker.pkg.dev/p/r/challenge-latam-api@sha256:" + "ab" * 32
SIDECAR = "gcr.io/datadoghq/serverless-init:1.7"


def fake_gcloud(tmp_path: Path, stdout: str, code: int = 0) -> dict:
    """An environment whose `gcloud` prints stdout, records its arguments and exits with code."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "answer").write_text(stdout)
    script = bin_dir / "gcloud"
    script.write_text(f'#!/bin/sh\necho "$@" >>"{tmp_path}/calls"\ncat "{tmp_path}/answer"\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", GCP_PROJECT_ID="p", GCP_REGION="us-central1",
               GITHUB_OUTPUT=str(tmp_path / "output"))
    return env


def service(image=IMAGE, ready="True", created="s-00002", ready_rev="s-00002", percent=100) -> str:
    return json.dumps({
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}, {"name": "datadog", "image": SIDECAR}]}}},
        "status": {
            "url": "https://challenge-latam-api-dev-abc-uc.a.run.app",
            "conditions": [{"type": "Ready", "status": ready}],
            "latestCreatedRevisionName": created,
            "latestReadyRevisionName": ready_rev,
            "traffic": [{"revisionName": ready_rev, "percent": percent, "latestRevision": True}]
            + ([{"revisionName": "s-00001", "percent": 100 - percent}] if percent < 100 else []),
        },
    })


def rollout(tmp_path: Path, answer: str) -> subprocess.CompletedProcess:
    env = fake_gcloud(tmp_path, answer)
    return subprocess.run([str(SCRIPTS / "check-rollout.sh"), "challenge-latam-api-dev", IMAGE],
                          env=env, capture_output=True, text=True)


def test_a_ready_revision_serving_the_digest_passes_and_outputs_the_url(tmp_path):
    done = rollout(tmp_path, service())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output").read_text() == "url=https://challenge-latam-api-dev-abc-uc.a.run.app\n"
    assert "--region us-central1" in (tmp_path / "calls").read_text()


@pytest.mark.parametrize(
    "answer, reason",
    [
        (service(ready="False"), "is not Ready"),
        (service(ready_rev="s-00001"), "latest revision of challenge-latam-api-dev is not ready"),
        (service(percent=90), "does not take all traffic"),
        (service(image=IMAGE.replace("ab", "cd")), "no container of challenge-latam-api-dev runs"),
    ],
)
def test_a_rollout_that_did_not_land_fails(tmp_path, answer, reason):
    done = rollout(tmp_path, answer)
    assert done.returncode != 0
    assert reason in done.stderr


def test_resolve_image_turns_a_tag_into_a_digest(tmp_path):
    env = fake_gcloud(tmp_path, "sha256:" + "0f" * 32 + "\n")
    done = subprocess.run([str(SCRIPTS / "resolve-image.sh"), "r/challenge-latam-api", "v1.2.3"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output").read_text() == f"image=r/challenge-latam-api@sha256:{'0f' * 32}\n"
    assert "artifacts docker images describe r/challenge-latam-api:v1.2.3" in (tmp_path / "calls").read_text()


@pytest.mark.parametrize("answer", ["", "latest\n", "sha256:123\n"])
def test_resolve_image_refuses_anything_but_a_digest(tmp_path, answer):
    env = fake_gcloud(tmp_path, answer)
    done = subprocess.run([str(SCRIPTS / "resolve-image.sh"), "r/challenge-latam-api", "v1.2.3"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "no digest" in done.stderr
    assert not (tmp_path / "output").exists()


def test_create_tag_refuses_a_name_that_is_not_a_release(tmp_path):
    env = dict(os.environ, GITHUB_REPOSITORY="o/r", PATH=os.environ["PATH"])
    done = subprocess.run([str(SCRIPTS / "create-tag.sh"), "latest", "abc", "/dev/null"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "not a release tag" in done.stderr


def fake_gh(tmp_path: Path, existing: str = "", target: str = "") -> dict:
    """A `gh` that answers the four GitHub API calls create-tag.sh makes, and records them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "gh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >>"{tmp_path}/calls"
        case "$2" in
          */git/ref/tags/*) [ -n "{existing}" ] && echo "{existing}" && exit 0; exit 1 ;;
          */git/tags/*) echo "{target}" ;;
          */git/tags) echo tag-object-sha ;;
          */git/refs) echo '{{}}' ;;
        esac
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", GITHUB_REPOSITORY="o/r")


def create_tag(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    notes = tmp_path / "notes.txt"
    notes.write_text("v1.2.0 (since v1.1.0)\n")
    return subprocess.run([str(SCRIPTS / "create-tag.sh"), "v1.2.0", "c0ffee", str(notes)],
                          env=env, capture_output=True, text=True)


def test_create_tag_creates_an_annotated_tag_then_its_ref(tmp_path):
    done = create_tag(tmp_path, fake_gh(tmp_path))
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[1].startswith("api repos/o/r/git/tags -f tag=v1.2.0 -f object=c0ffee -f type=commit -F message=@")
    assert calls[2] == "api repos/o/r/git/refs -f ref=refs/tags/v1.2.0 -f sha=tag-object-sha"


def test_create_tag_is_idempotent_for_the_same_commit(tmp_path):
    done = create_tag(tmp_path, fake_gh(tmp_path, existing="tag-object-sha", target="c0ffee"))
    assert done.returncode == 0, done.stderr
    assert "already points at c0ffee" in done.stdout
    assert len((tmp_path / "calls").read_text().splitlines()) == 2  # looked, created nothing


def test_create_tag_refuses_to_move_a_tag(tmp_path):
    done = create_tag(tmp_path, fake_gh(tmp_path, existing="tag-object-sha", target="deadbeef"))
    assert done.returncode == 1
    assert "points at deadbeef, not c0ffee" in done.stderr


def datadog_keys(tmp_path: Path, answer: str, **extra: str) -> subprocess.CompletedProcess:
    env = fake_gcloud(tmp_path, answer)
    env.update(GITHUB_ENV=str(tmp_path / "github_env"), **extra)
    return subprocess.run([str(SCRIPTS / "datadog-keys.sh"), "prod"], env=env, capture_output=True, text=True)


def test_datadog_keys_come_from_secret_manager_masked(tmp_path):
    done = datadog_keys(tmp_path, "k3y")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "github_env").read_text() == "DD_API_KEY=k3y\nDD_APP_KEY=k3y\n"
    assert done.stdout.count("::add-mask::k3y") == 2
    calls = (tmp_path / "calls").read_text()
    assert "--secret challenge-latam-datadog-api-key-prod" in calls
    assert "--secret challenge-latam-datadog-app-key-prod" in calls


def test_an_empty_datadog_secret_fails(tmp_path):
    done = datadog_keys(tmp_path, "")
    assert done.returncode == 1
    assert "challenge-latam-datadog-api-key-prod is empty" in done.stderr


def test_datadog_keys_are_not_read_when_datadog_is_not_managed(tmp_path):
    done = datadog_keys(tmp_path, "k3y", ENABLE_DATADOG="false")
    assert done.returncode == 0
    assert not (tmp_path / "github_env").exists() and not (tmp_path / "calls").exists()


def running_image(tmp_path: Path, answer: str) -> subprocess.CompletedProcess:
    env = fake_gcloud(tmp_path, answer)
    return subprocess.run([str(SCRIPTS / "running-image.sh"), "challenge-latam-api-prod"],
                          env=env, capture_output=True, text=True)


def with_name(doc: str, name: str) -> dict:
    svc = json.loads(doc)
    svc["metadata"] = {"name": name}
    return svc


def test_the_rollback_target_is_the_app_image_the_service_runs_before_the_deploy(tmp_path):
    done = running_image(tmp_path, json.dumps([with_name(service(), "challenge-latam-api-prod")]))
    assert done.returncode == 0, done.stderr
    assert done.stdout == IMAGE + "\n"  # the app's digest, not the Datadog sidecar's tag
    assert "--filter=metadata.name=challenge-latam-api-prod" in (tmp_path / "calls").read_text()


def test_no_service_yet_means_no_rollback_target_and_an_api_error_stops(tmp_path):
    assert running_image(tmp_path, "[]").stdout == ""
    other = json.dumps([with_name(service(), "challenge-latam-api-dev")])
    assert running_image(tmp_path, other).stdout == ""
    env = fake_gcloud(tmp_path, "ERROR: (gcloud.run.services.list) PERMISSION_DENIED", code=1)
    done = subprocess.run([str(SCRIPTS / "running-image.sh"), "challenge-latam-api-prod"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout == ""
