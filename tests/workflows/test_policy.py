"""Each rule in policy.py fails on the mistake it exists to catch (a check that cannot fail is a
defect), and the README parser reads both code-block styles."""

from __future__ import annotations

import textwrap

import yaml

import policy

SHA = "3d3c42e5aac5ba805825da76410c181273ba90b1"


def wf(text: str) -> tuple[dict, str]:
    text = textwrap.dedent(text)
    return yaml.safe_load(text), text


def test_a_tag_or_branch_reference_is_reported_as_unpinned():
    doc, text = wf(
        """
        on: push
        permissions: {}
        jobs:
          a:
            runs-on: ubuntu-24.04
            steps:
              - uses: actions/checkout@v7
              - uses: google-github-actions/auth@main
              - uses: actions/cache@27d5ce7f # short SHA
          b:
            uses: octo/shared/.github/workflows/x.yml@v1
        """
    )
    problems = policy.unpinned_uses(doc, text)
    assert len(problems) == 4, problems


def test_a_sha_without_its_version_comment_is_reported():
    doc, text = wf(
        f"""
        on: push
        jobs:
          a:
            steps:
              - uses: actions/checkout@{SHA}
        """
    )
    assert ["no '# vX.Y.Z' comment" in p for p in policy.unpinned_uses(doc, text)] == [True]


def test_pinned_and_local_uses_pass():
    doc, text = wf(
        f"""
        on: push
        jobs:
          a:
            steps:
              - uses: actions/checkout@{SHA} # v7.0.1
              - uses: $/.github/actions/setup
              - uses: ./.github/actions/setup
              - uses: docker://alpine@sha256:{'a' * 64}
          b:
            uses: $/.github/workflows/deploy.yml
        """
    )
    assert policy.unpinned_uses(doc, text) == []


def test_every_way_of_using_a_json_key_is_reported():
    doc, text = wf(
        f"""
        on: push
        env:
          GOOGLE_APPLICATION_CREDENTIALS: /tmp/key.json
        jobs:
          a:
            steps:
              - uses: google-github-actions/auth@{SHA} # v3.0.0
                with:
                  credentials_json: ${{{{ secrets.GCP_SA_KEY }}}}
              - run: echo "$KEY" > key.json && gcloud auth activate-service-account --key-file key.json
              - run: deploy
                env:
                  GOOGLE_CREDENTIALS: x
        """
    )
    problems = policy.json_key_uses(doc, text)
    joined = "\n".join(problems)
    for expected in ("credentials_json", "without workload_identity_provider", "handles a key file",
                     "GOOGLE_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS", "secrets.GCP_SA_KEY"):
        assert expected in joined, (expected, problems)


def test_workload_identity_federation_passes():
    doc, text = wf(
        f"""
        on: push
        jobs:
          a:
            steps:
              - uses: google-github-actions/auth@{SHA} # v3.0.0
                with:
                  workload_identity_provider: ${{{{ vars.WIF_PROVIDER }}}}
                  service_account: ${{{{ vars.SERVICE_ACCOUNT }}}}
        """
    )
    assert policy.json_key_uses(doc, text) == []


def test_broad_or_missing_permissions_are_reported():
    doc, _ = wf(
        f"""
        on: push
        permissions: write-all
        jobs:
          no_perms:
            steps: []
          everything:
            permissions: write-all
          idle_token:
            permissions:
              id-token: write
            steps:
              - run: echo hi
          auth_without_token:
            permissions:
              contents: read
            steps:
              - uses: google-github-actions/auth@{SHA} # v3.0.0
          writes:
            permissions:
              contents: write
              packages: write
            steps:
              - run: echo no tag here
        """
    )
    problems = "\n".join(policy.permission_problems(doc))
    for expected in ("top-level permissions", "no_perms does not declare", "everything has write-all",
                     "idle_token has id-token: write but never", "auth_without_token authenticates without",
                     "writes has packages: write", "writes has contents: write but creates no tag"):
        assert expected in problems, (expected, problems)


def test_a_checkout_that_keeps_the_token_is_reported():
    doc, _ = wf(
        f"""
        jobs:
          a:
            steps:
              - uses: actions/checkout@{SHA} # v7.0.1
              - uses: actions/checkout@{SHA} # v7.0.1
                with:
                  persist-credentials: false
        """
    )
    assert len(policy.checkout_problems(doc)) == 1


def test_the_readme_command_is_read_from_fenced_and_indented_blocks():
    fenced = "# x\n\n## Run\n\n```sh\nmake run\n```\n\n## Test\n\n```sh\nmake test\n```\n\n## More\n"
    indented = "# x\n\n## Test\n\n    make test\n\n## Next\n\n    other\n"
    prompt = "## Test\n\n```console\n$ make test\n```\n"
    assert policy.readme_test_command(fenced) == "make test"
    assert policy.readme_test_command(indented) == "make test"
    assert policy.readme_test_command(prompt) == "make test"


def test_a_readme_without_a_test_section_fails():
    try:
        policy.readme_test_command("# x\n\n## Run\n\n    make run\n")
    except AssertionError as error:
        assert "## Test" in str(error)
    else:
        raise AssertionError("expected a failure")


def test_a_single_stage_root_unpinned_dockerfile_fails_every_rule():
    assert policy.dockerfile_problems("FROM rust:1.95\nRUN cargo build --release\n") == ["not a multi-stage build"]
    problems = "\n".join(
        policy.dockerfile_problems(
            "FROM rust:1.95 AS build\nCOPY . .\nRUN cargo build --release\n"
            "FROM debian:12\nENV API_KEY=abc\nUSER root\nCOPY --from=build /x /x\n"
        )
    )
    for expected in ("rust:1.95 is not pinned", "debian:12 is not pinned", "not distroless or scratch",
                     "runs as root", "org.opencontainers.image.source", "looks like a secret",
                     "no stage builds the dependencies"):
        assert expected in problems, (expected, problems)


def test_dockerignore_matching_follows_docker_rules():
    patterns = ["target", "**/*.db", "docs", "!docs/keep.md", "# comment"]
    assert policy.dockerignore_excludes(patterns, "target")
    assert policy.dockerignore_excludes(patterns, "target/release/x")
    assert policy.dockerignore_excludes(patterns, "a/b/c.db")
    assert policy.dockerignore_excludes(patterns, "c.db")
    assert policy.dockerignore_excludes(patterns, "docs/x.md")
    assert not policy.dockerignore_excludes(patterns, "docs/keep.md")
    assert not policy.dockerignore_excludes(patterns, "src/main.rs")
    assert not policy.dockerignore_excludes(patterns, "targets")
