#!/usr/bin/env bash
# Creates the annotated release tag TAG on COMMIT through the GitHub API (the job's token needs
# contents: write; no git credentials are kept in the checkout). Succeeds without change when
# TAG already points at COMMIT (a re-run), fails when it points anywhere else.
#
#   GH_TOKEN=... GITHUB_REPOSITORY=owner/name create-tag.sh v1.2.3 <sha> release-notes.txt
set -euo pipefail
tag=${1:?usage: create-tag.sh TAG COMMIT NOTES_FILE}
commit=${2:?usage: create-tag.sh TAG COMMIT NOTES_FILE}
notes=${3:?usage: create-tag.sh TAG COMMIT NOTES_FILE}
: "${GITHUB_REPOSITORY:?}"
[[ "$tag" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "not a release tag: $tag" >&2; exit 1; }

if existing=$(gh api "repos/$GITHUB_REPOSITORY/git/ref/tags/$tag" --jq '.object.sha' 2>/dev/null); then
  target=$(gh api "repos/$GITHUB_REPOSITORY/git/tags/$existing" --jq '.object.sha' 2>/dev/null || echo "$existing")
  if [ "$target" = "$commit" ]; then
    echo "$tag already points at $commit"
    exit 0
  fi
  echo "$tag already exists and points at $target, not $commit" >&2
  exit 1
fi

object=$(gh api "repos/$GITHUB_REPOSITORY/git/tags" \
  -f tag="$tag" -f object="$commit" -f type=commit -F message=@"$notes" --jq '.sha')
gh api "repos/$GITHUB_REPOSITORY/git/refs" -f ref="refs/tags/$tag" -f sha="$object" >/dev/null
echo "tagged $commit as $tag"
