#!/usr/bin/env bash
# The README's test command: set up everything the tests need on a fresh
# Debian 12 or 13 machine (root, no systemd), then run the whole suite.
#   Docker + Podman with the image cb-demo:latest, a one-node Slurm, a one-node Grid Engine (container),
#   chromium and tmux (report and live-display tests), the Python package, and a one-container
#   HTCondor pool with Apptainer built from Debian packages (ci/htcondor/run.sh), and Slurm 24.11 (Debian
#   trixie) in one container beside the host's Slurm (ci/slurm/run.sh).
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
# HTCondor 25.x + Apptainer (Debian sid) in one container; the live tests use its tools in ci/htcondor/bin.
# HTCondor 23.x (trixie) runs the scenario comparison (the contract subset) afterwards. It is built before
# the tests, not beside them: a build running alongside makes the timing of live tests unreliable.
bash ci/htcondor/run.sh up
export CB_HTCONDOR_BIN=$PWD/ci/htcondor/bin
trixie_ok=0
CB_CONDOR_SUITE=trixie bash ci/htcondor/run.sh up > /tmp/cb-condor-trixie-up.log 2>&1 || trixie_ok=$?
# Slurm 24.11 in a container (on the same trixie root); the tests marked slurm24 use ci/slurm/bin-trixie and
# fail, with CI set, when it did not come up.
slurm24_ok=0
bash ci/slurm/run.sh up || slurm24_ok=$?
export CB_SLURM24_BIN=$PWD/ci/slurm/bin-trixie
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# podman 5 (Debian 13) on cgroup v1 warns on every call (deprecated, still works): not on the tests' stderr
export PODMAN_IGNORE_CGROUPSV1_WARNING=1
status=0
python3 -m pytest "$@" || status=$?
if [ "$trixie_ok" -eq 0 ]; then
    CB_HTCONDOR_BIN=$PWD/ci/htcondor/bin-trixie python3 -m pytest -p no:cacheprovider \
        tests/test_htcondor_scenario.py -k live_pool || status=$?
else
    cat /tmp/cb-condor-trixie-up.log >&2
    status=1
fi
if [ "$slurm24_ok" -ne 0 ]; then
    echo "ci/slurm/run.sh up failed (exit $slurm24_ok): see above" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    bash ci/slurm/dump.sh || true
    bash ci/slurm/run.sh dump || true
    /usr/bin/docker logs --tail 30 cb-sge 2>&1 || true
    bash ci/htcondor/run.sh dump || true
fi
exit "$status"
