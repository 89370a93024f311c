#!/usr/bin/env bash
# Installs the Google Pub/Sub emulator on a GitHub runner, where `make test` expects it at the
# same path as on the project's machine image. The runner's gcloud comes from Google's Debian
# repository, which also ships the emulator as a package. Does nothing when it is already there.
set -euo pipefail
emulator=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
if [ -x "$emulator" ]; then
  echo "pubsub emulator already installed: $emulator"
  exit 0
fi
sudo apt-get update -qq
sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends google-cloud-cli-pubsub-emulator
test -x "$emulator" || { echo "pubsub emulator missing after install: $emulator" >&2; exit 1; }
java -version 2>&1 | head -1
echo "pubsub emulator installed: $emulator"
