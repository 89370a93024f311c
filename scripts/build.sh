#!/usr/bin/env bash
# The one release build every local command uses: `make run`, `make test`, the checks, the
# benchmarks and the emulator stacks all call this script, so they build the same selection.
# Cargo resolves features over the packages it builds; two different selections (say `--bin`
# here and `--workspace` there) compile the library twice, and a benchmark could compare a
# binary from one with an example from the other. Extra arguments go to cargo (e.g. -q).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo build --release --locked --workspace --bins --examples "$@"
