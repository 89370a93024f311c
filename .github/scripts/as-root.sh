#!/usr/bin/env bash
# A `shell:` for the steps that must run as root, as the project's CI machine runs them (.ci/run
# runs `make test` as root: the disk-full drill mounts a tmpfs, and with CI=true a drill that
# cannot run fails). Keeps the runner's toolchain and settings; GitHub's runner user has
# passwordless sudo.
#
#   - run: make test
#     shell: bash .github/scripts/as-root.sh {0}
set -euo pipefail
script=${1:?usage: as-root.sh SCRIPT}
if [ "$(id -u)" -eq 0 ]; then
  exec bash --noprofile --norc -eo pipefail "$script"
fi
exec sudo --preserve-env=HOME,CARGO_HOME,RUSTUP_HOME,CI,GITHUB_ACTIONS,CARGO_TERM_COLOR,CARGO_INCREMENTAL \
  env "PATH=$PATH" bash --noprofile --norc -eo pipefail "$script"
