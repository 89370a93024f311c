#!/usr/bin/env bash
# Installs the offline tools the checks need, idempotently, into places the project owns:
#   - Debian packages listed in scripts/deps/*.apt (only when missing; needs root or sudo),
#   - Python tools listed in scripts/deps/*.pip into the project-local venv .tools/venv.
# Each area of the repo (terraform, slo, dashboards, workflows, loadtests) keeps its own list,
# so adding a tool never means editing a shared file. Safe to run again: it does nothing when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/venv
stamp=.tools/pip.stamp

# --- Debian packages -------------------------------------------------------------------------
mapfile -t apt_pkgs < <(cat scripts/deps/*.apt 2>/dev/null | sed 's/#.*//' | awk 'NF' | sort -u)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python tools in the project venv ---------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv"
  python3 -m venv "$venv"
fi
want=$(cat scripts/deps/*.pip 2>/dev/null | sed 's/#.*//' | awk 'NF' | sort -u)
if [ ! -f "$stamp" ] || [ "$want" != "$(cat "$stamp")" ]; then
  echo "bootstrap: installing Python tools into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check $want
  for hook in scripts/deps/*.post; do
    [ -e "$hook" ] && bash "$hook"
  done
  printf '%s' "$want" >"$stamp"
fi
echo "bootstrap: tools ready"
