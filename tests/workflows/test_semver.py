"""scripts/release/semver.py against real git repositories built in a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SEMVER = Path(__file__).resolve().parents[2] / "scripts" / "release" / "semver.py"


class Repo:
    """A throwaway git repository with helpers to commit, tag and merge."""

    def __init__(self, path: Path):
        self.path = path
        self.git("init", "-q", "-b", "develop")
        self.git("config", "user.email", "ci@example.invalid")
        self.git("config", "user.name", "ci")
        self.git("config", "commit.gpgsign", "false")
        self.git("config", "tag.gpgsign", "false")
        self.counter = 0

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True, text=True).stdout

    def commit(self, message: str) -> str:
        self.counter += 1
        (self.path / f"file{self.counter}.txt").write_text(f"{self.counter}\n")
        self.git("add", ".")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def tag(self, name: str, ref: str = "HEAD") -> None:
        self.git("tag", "-a", name, "-m", name, ref)

    def semver(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SEMVER), *args], cwd=self.path, capture_output=True, text=True)

    def next(self) -> str:
        done = self.semver("next")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_a_first_feature_without_tags_releases_0_1_0(repo):
    repo.commit("chore: scaffold")
    repo.commit("feat(api): ingest records")
    assert repo.next() == "v0.1.0"


def test_a_fix_after_a_tag_bumps_the_patch(repo):
    repo.commit("feat: first")
    repo.tag("v1.4.2")
    repo.commit("fix(query): respect the limit")
    assert repo.next() == "v1.4.3"


def test_a_feature_bumps_the_minor_and_resets_the_patch(repo):
    repo.commit("feat: first")
    repo.tag("v1.4.2")
    repo.commit("fix: a")
    repo.commit("feat(ingest): batches")
    assert repo.next() == "v1.5.0"


def test_a_bang_makes_a_major_release(repo):
    repo.commit("feat: first")
    repo.tag("v1.4.2")
    repo.commit("feat(api)!: getData returns a bare list")
    assert repo.next() == "v2.0.0"


def test_a_breaking_change_footer_makes_a_major_release(repo):
    repo.commit("feat: first")
    repo.tag("v0.3.1")
    repo.commit("refactor: rename settings\n\nBREAKING CHANGE: PUBSUB_TOPIC replaces TOPIC")
    assert repo.next() == "v1.0.0"


def test_only_docs_ci_and_chores_release_nothing(repo):
    repo.commit("feat: first")
    repo.tag("v0.1.0")
    repo.commit("docs: runbook")
    repo.commit("ci(workflows): cache cargo")
    repo.commit("Merge branch 'feature/x' into develop")
    assert repo.next() == ""
    details = json.loads(repo.semver("next", "--json").stdout)
    assert details["bump"] == "none" and details["previous"] == "v0.1.0" and len(details["commits"]) == 3


def test_the_highest_version_wins_over_the_newest_tag(repo):
    repo.commit("feat: first")
    repo.tag("v2.0.0")
    repo.commit("fix: second")
    repo.tag("v1.9.9")  # an older line tagged later must not become the base
    repo.commit("fix: third")
    assert repo.next() == "v2.0.1"


def test_tags_that_are_not_plain_versions_are_ignored(repo):
    repo.commit("feat: first")
    repo.tag("v3.0.0-rc.1")
    repo.tag("release-7")
    repo.commit("fix: second")
    assert repo.next() == "v0.1.0"


def test_only_commits_after_the_tag_count(repo):
    repo.commit("feat!: everything")
    repo.tag("v1.0.0")
    repo.commit("fix: small")
    assert repo.next() == "v1.0.1"


def merge_develop_into_main(repo: Repo) -> None:
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from org/develop", "develop")


def test_promotable_is_the_release_merged_into_main(repo):
    repo.commit("feat: first")
    repo.tag("v0.1.0")
    repo.git("branch", "main")
    repo.commit("feat: second")
    repo.tag("v0.2.0")
    merge_develop_into_main(repo)
    done = repo.semver("promotable")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "v0.2.0"


def test_promotable_ignores_unreleasable_commits_after_the_tag(repo):
    repo.commit("feat: first")
    repo.git("branch", "main")
    repo.tag("v0.1.0")
    repo.commit("docs: runbook")
    repo.commit("ci: cache")
    merge_develop_into_main(repo)
    assert repo.semver("promotable").stdout.strip() == "v0.1.0"


def test_promotable_refuses_releasable_commits_not_yet_released(repo):
    repo.commit("feat: first")
    repo.tag("v0.1.0")
    repo.git("branch", "main")
    repo.commit("fix(query): not yet released")
    merge_develop_into_main(repo)
    done = repo.semver("promotable")
    assert done.returncode == 1
    assert "releasable commits after v0.1.0 (fix(query): not yet released)" in done.stderr
    assert "v0.1.1" in done.stderr


def test_promotable_refuses_a_history_without_releases(repo):
    repo.commit("chore: scaffold")
    done = repo.semver("promotable")
    assert done.returncode == 1
    assert "released nothing yet" in done.stderr


def test_notes_group_the_commits_by_impact(repo):
    repo.commit("feat: first")
    repo.tag("v0.1.0")
    repo.commit("fix(query): limit")
    repo.commit("feat(ingest): batches")
    repo.commit("docs: readme")
    notes = repo.semver("notes").stdout
    assert notes.startswith("v0.2.0 (since v0.1.0)")
    assert "Features:\n- feat(ingest): batches" in notes
    assert "Fixes:\n- fix(query): limit" in notes
    assert "docs: readme" not in notes


@pytest.mark.parametrize(
    "subject",
    ["feat: add x", "fix(api): y", "feat(api)!: z", "chore(deps): bump a", "revert: feat: x"],
)
def test_lint_accepts_conventional_headers(subject, tmp_path):
    done = subprocess.run([sys.executable, str(SEMVER), "lint", subject], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "subject",
    ["Add x", "feat:missing space", "feature: not a type", "Feat: capitalised", "fix(): empty scope", "feat: "],
)
def test_lint_rejects_anything_else(subject, tmp_path):
    done = subprocess.run([sys.executable, str(SEMVER), "lint", subject], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "not a conventional commit" in done.stderr
