#!/usr/bin/env bash
# Checks the CI/CD definitions and the container image offline (docs/ci-cd.md):
#   1. every linter is installed, and reports the known-bad fixtures in tests/workflows/fixtures
#      (a linter that finds nothing there is broken, and its clean result below means nothing);
#   2. actionlint (with shellcheck on every run: block) on .github/workflows: zero findings;
#   3. zizmor --offline, pedantic persona, on the workflows, actions and dependabot.yml: zero;
#   4. hadolint on the Dockerfile, failing on any finding down to style: zero;
#   5. shellcheck on the scripts the workflows call;
#   6. pytest tests/workflows: pinned actions, no JSON keys, least privilege, the README's test
#      command in the test job, deploy by digest, the release logic, the rollout scripts.
# Exits non-zero on the first failure; prints what it checked, with counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

fixtures=tests/workflows/fixtures
say() { printf '50-workflows: %s\n' "$*"; }
fail() { printf '50-workflows: FAIL: %s\n' "$*" >&2; exit 1; }

# 1. Tools present and able to fail ------------------------------------------------------------
for tool in actionlint zizmor hadolint shellcheck pytest python; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/bootstrap.sh installs it from scripts/deps/workflows.*)"
done
say "tools: actionlint $(actionlint -version | head -1 | awk '{print $NF}'), $(zizmor --version), hadolint $(hadolint --version | awk '{print $NF}'), shellcheck $(shellcheck --version | awk '/^version:/ {print $2}')"

kinds=$(actionlint -format '{{json .}}' "$fixtures/bad-workflow.yml" | python -c 'import json,sys; print(" ".join(sorted({e["kind"] for e in json.load(sys.stdin)})))' || true)
for kind in expression shellcheck; do
  [[ " $kinds " == *" $kind "* ]] || fail "actionlint did not report '$kind' on $fixtures/bad-workflow.yml (got: $kinds)"
done
idents=$(zizmor --offline -q --format json "$fixtures/bad-workflow.yml" | python -c 'import json,sys; print(" ".join(sorted({f["ident"] for f in json.load(sys.stdin)})))' || true)
for ident in unpinned-uses excessive-permissions template-injection dangerous-triggers artipacked; do
  [[ " $idents " == *" $ident "* ]] || fail "zizmor did not report '$ident' on $fixtures/bad-workflow.yml (got: $idents)"
done
if hadolint --failure-threshold style "$fixtures/bad.Dockerfile" >/dev/null; then
  fail "hadolint passed $fixtures/bad.Dockerfile"
fi
say "fixtures: actionlint reported [$kinds], zizmor [$idents], hadolint failed bad.Dockerfile as it should"

# 2. actionlint ---------------------------------------------------------------------------------
mapfile -t workflows < <(find .github/workflows -name '*.yml' -o -name '*.yaml' | sort)
((${#workflows[@]})) || fail "no workflows in .github/workflows"
actionlint -shellcheck="$(command -v shellcheck)" "${workflows[@]}" || fail "actionlint reported findings"
say "actionlint: ${#workflows[@]} workflows, 0 findings"

# 3. zizmor -------------------------------------------------------------------------------------
zizmor_out=$(mktemp)
trap 'rm -f "$zizmor_out"' EXIT
if ! zizmor --offline --persona=pedantic --format json . >"$zizmor_out" 2>/dev/null; then
  zizmor --offline --persona=pedantic . || true
  fail "zizmor reported findings"
fi
findings=$(python -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$zizmor_out")
[ "$findings" = 0 ] || fail "zizmor: $findings findings"
audited=$(find .github -name '*.yml' -o -name '*.yaml' | grep -c -E 'workflows/|actions/|dependabot')
say "zizmor (offline, pedantic): $audited files, 0 findings"

# 4. hadolint -----------------------------------------------------------------------------------
hadolint --failure-threshold style Dockerfile || fail "hadolint reported findings on Dockerfile"
say "hadolint: Dockerfile ($(grep -c '^FROM ' Dockerfile) stages), 0 findings"

# 5. shellcheck ---------------------------------------------------------------------------------
mapfile -t scripts < <(find .github/scripts scripts/release -name '*.sh' | sort)
scripts+=(scripts/checks/50-workflows.sh)
shellcheck "${scripts[@]}" || fail "shellcheck reported findings"
say "shellcheck: ${#scripts[@]} scripts, 0 findings"

# 6. structure, release logic and scripts ------------------------------------------------------
# Plugin autoload off: other tools in the shared venv register pytest plugins (bqemulator's
# needs testcontainers, which is not installed); these tests use none.
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 pytest -q -p no:cacheprovider tests/workflows || fail "tests/workflows failed"
say "all checks passed"
