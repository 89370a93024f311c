#!/usr/bin/env bash
# The one test command (README: `make test`). Installs its tools, then runs every check:
# format, lint, the Rust test suites, and each area's checks in scripts/checks/ in order.
# Any failure stops the run with a non-zero exit. A check that cannot run says so and fails;
# nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/venv/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "bootstrap tools"
# The build and the tools take about 6 GiB (target/ 3.5, .tools/ 1.5, emulators); a full disk
# shows up much later as a linker killed by SIGBUS, so say how much there is up front.
# Informational only: a df that fails or prints something unexpected must not stop the run.
free_kib=$(df -Pk . 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
if [[ "$free_kib" =~ ^[0-9]+$ ]]; then
  echo "disk: $((free_kib / 1024 / 1024)) GiB free in $PWD"
  if [ "$free_kib" -lt $((6 * 1024 * 1024)) ]; then
    echo "warning: less than 6 GiB free; the release build may fail for lack of space" >&2
  fi
else
  echo "disk: free space unknown (df gave '${free_kib}')"
fi
scripts/bootstrap.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --release (the binary the black-box tests, drills and load tests run)"
scripts/build.sh

step "cargo test"
cargo test --workspace --locked --release

for check in scripts/checks/*.sh; do
  [ -e "$check" ] || continue
  step "$check"
  bash "$check"
done

step "all checks passed"
