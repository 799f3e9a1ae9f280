#!/usr/bin/env bash
# The README's test command: set up everything the tests need on a fresh
# Debian 12 machine (root, no systemd), then run the whole suite.
#   Docker + Podman with the image cb-demo:latest, a one-node Slurm, a one-node Grid Engine (container),
#   chromium and tmux (report and live-display tests), the Python package.
# Live tests are required when CI is set: a missing engine fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for p in chromium tmux util-linux debootstrap; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
bash ci/docker/setup.sh
bash ci/slurm/setup.sh
bash ci/sge/setup.sh   # one-node Grid Engine 8.1.9 in a container (~25 s the first time)
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
status=0
python3 -m pytest "$@" || status=$?
if [ "$status" -ne 0 ]; then
    bash ci/slurm/dump.sh || true
    /usr/bin/docker logs --tail 30 cb-sge 2>&1 || true
fi
exit "$status"
