#!/usr/bin/env python3
"""Semantic versions from Conventional Commits, computed from the git history alone.

The release job on `develop` asks `next` for the version to tag; the promotion job on `main`
asks `promotable` which release the merged history carries; pull requests run `lint` on their
title so that squash merges stay parseable. Everything reads the local git
repository, so the whole release logic is testable offline (tests/workflows/test_semver.py).

Rules (https://www.conventionalcommits.org/en/v1.0.0/):
  - a `!` after the type/scope, or a `BREAKING CHANGE:` / `BREAKING-CHANGE:` footer -> major
  - `feat`                                                                      -> minor
  - `fix`, `perf`, `revert`                                                     -> patch
  - any other type (docs, test, ci, chore, build, refactor, style)              -> no release
  - a subject that is not a conventional commit (e.g. "Merge branch ...")       -> ignored
Tags are `vMAJOR.MINOR.PATCH`; the previous version is the highest such tag reachable from the
ref (0.0.0 when there is none), and only the commits after it count.

Usage:
  semver.py next [--ref REF] [--json]     print the next tag (vX.Y.Z), or nothing when no
                                          commit since the last tag is releasable
  semver.py notes [--ref REF]             release notes of those commits (the tag's message)
  semver.py promotable [--ref REF]        the release to promote for REF: the highest vX.Y.Z
                                          tag reachable from it; exit 1 when there is none, or
                                          when REF holds releasable commits after that tag (its
                                          release has not been cut yet, so promoting the older
                                          tag would silently ship less than was merged)
  semver.py lint SUBJECT...               exit 1 unless every SUBJECT is a conventional header
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass

TYPES = ("feat", "fix", "perf", "revert", "refactor", "docs", "test", "build", "ci", "chore", "style")
PATCH_TYPES = ("fix", "perf", "revert")
HEADER = re.compile(
    r"^(?P<type>[a-z]+)(?:\((?P<scope>[A-Za-z0-9_./ -]+)\))?(?P<bang>!)?: (?P<description>\S.*)$"
)
BREAKING_FOOTER = re.compile(r"^BREAKING[ -]CHANGE: \S", re.MULTILINE)
TAG = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
BUMPS = ("none", "patch", "minor", "major")


@dataclass(frozen=True)
class Commit:
    """One commit as the version computation sees it."""

    sha: str
    subject: str
    body: str

    def kind(self) -> str | None:
        """The conventional type, or None when the subject is not a conventional header."""
        match = HEADER.match(self.subject)
        if not match or match["type"] not in TYPES:
            return None
        return match["type"]

    def bump(self) -> str:
        """How far this commit alone moves the version."""
        match = HEADER.match(self.subject)
        if not match or match["type"] not in TYPES:
            return "none"
        if match["bang"] or BREAKING_FOOTER.search(self.body):
            return "major"
        if match["type"] == "feat":
            return "minor"
        if match["type"] in PATCH_TYPES:
            return "patch"
        return "none"


def git(*args: str) -> str:
    """Run git in the current directory and return its stdout; a git failure is fatal."""
    done = subprocess.run(["git", *args], check=True, capture_output=True, text=True)
    return done.stdout


def parse_tag(tag: str) -> tuple[int, int, int] | None:
    match = TAG.match(tag)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def latest_tag(ref: str) -> str | None:
    """The highest vX.Y.Z tag reachable from ref, by version (not by date)."""
    tags = [t for t in git("tag", "--merged", ref, "--list", "v*").split() if parse_tag(t)]
    return max(tags, key=parse_tag, default=None)  # type: ignore[arg-type]


def commits_since(tag: str | None, ref: str) -> list[Commit]:
    """The commits reachable from ref and not from tag, oldest first."""
    span = f"{tag}..{ref}" if tag else ref
    raw = git("log", "--reverse", "--format=%H%x1f%s%x1f%b%x1e", span)
    commits = []
    for record in raw.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        sha, subject, body = record.split("\x1f", 2)
        commits.append(Commit(sha=sha, subject=subject, body=body))
    return commits


def bump_version(version: tuple[int, int, int], bump: str) -> tuple[int, int, int]:
    major, minor, patch = version
    if bump == "major":
        return (major + 1, 0, 0)
    if bump == "minor":
        return (major, minor + 1, 0)
    if bump == "patch":
        return (major, minor, patch + 1)
    return version


def next_release(ref: str) -> dict:
    """The previous tag, the bump and the next tag (None when nothing is releasable)."""
    previous = latest_tag(ref)
    commits = commits_since(previous, ref)
    bump = max((c.bump() for c in commits), key=BUMPS.index, default="none")
    base = parse_tag(previous) if previous else (0, 0, 0)
    assert base is not None
    following = None if bump == "none" else "v%d.%d.%d" % bump_version(base, bump)
    return {
        "previous": previous,
        "bump": bump,
        "next": following,
        "commits": [{"sha": c.sha, "subject": c.subject, "bump": c.bump()} for c in commits],
    }


def release_notes(ref: str) -> str:
    """Release notes grouped as changelogs usually are; non-conventional subjects are left out."""
    release = next_release(ref)
    sections = {"major": "Breaking changes", "minor": "Features", "patch": "Fixes"}
    lines = [f"{release['next'] or 'unreleased'} (since {release['previous'] or 'the beginning'})"]
    for bump, title in sections.items():
        entries = [c for c in release["commits"] if c["bump"] == bump]
        if entries:
            lines += ["", f"{title}:"] + [f"- {c['subject']} ({c['sha'][:12]})" for c in entries]
    return "\n".join(lines) + "\n"


def promotable(ref: str) -> tuple[str | None, str]:
    """The release tag to promote for ref, or None and the reason."""
    release = next_release(ref)
    if release["previous"] is None:
        return None, f"no vX.Y.Z tag is reachable from {ref}: develop's pipeline has released nothing yet"
    if release["next"] is not None:
        pending = ", ".join(c["subject"] for c in release["commits"] if c["bump"] != "none")
        return None, (
            f"{ref} has releasable commits after {release['previous']} ({pending}): wait for develop's "
            f"pipeline to release them (it tags {release['next']}), then re-run this promotion"
        )
    return release["previous"], ""


def lint(subjects: list[str]) -> list[str]:
    """The subjects that are not conventional headers, each with the reason."""
    problems = []
    for subject in subjects:
        match = HEADER.match(subject)
        if not match:
            problems.append(f"{subject!r}: not '<type>(<scope>)!: <description>'")
        elif match["type"] not in TYPES:
            problems.append(f"{subject!r}: type {match['type']!r} is not one of {', '.join(TYPES)}")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    nxt = sub.add_parser("next")
    nxt.add_argument("--ref", default="HEAD")
    nxt.add_argument("--json", action="store_true")
    notes = sub.add_parser("notes")
    notes.add_argument("--ref", default="HEAD")
    promote = sub.add_parser("promotable")
    promote.add_argument("--ref", default="HEAD")
    lnt = sub.add_parser("lint")
    lnt.add_argument("subjects", nargs="+")
    args = parser.parse_args(argv)

    if args.command == "next":
        release = next_release(args.ref)
        if args.json:
            print(json.dumps(release, indent=2))
        elif release["next"]:
            print(release["next"])
        return 0
    if args.command == "notes":
        sys.stdout.write(release_notes(args.ref))
        return 0
    if args.command == "promotable":
        tag, reason = promotable(args.ref)
        if tag is None:
            print(reason, file=sys.stderr)
            return 1
        print(tag)
        return 0
    problems = lint(args.subjects)
    for problem in problems:
        print(f"not a conventional commit: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
