#!/usr/bin/env bash
# Start a one-node Slurm cluster on this CI machine (no systemd: daemons are
# started directly), check it runs jobs, and measure job turnaround.
# Idempotent: installs, configures and starts only what is missing.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
JOBDIR=/tmp/containerbatch-ci/slurm-jobs   # where test jobs write slurm-*.out
N_BENCH=${N_BENCH:-50}

missing=()
for p in slurmctld slurmd slurm-client munge; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

munge_start

# A changed config needs a restart (e.g. SelectType cannot be reconfigured).
if slurm_write_conf; then
    echo "wrote $SLURM_CONF" >&2
    pidfile_stop /run/slurmd.pid
    pidfile_stop /run/slurmctld.pid
fi
slurm_start
slurm_wait_idle

mkdir -p "$JOBDIR"
cd "$JOBDIR"

# Smoke test: one trivial job must reach COMPLETED.
id=$(sbatch --parsable --wrap true)
slurm_wait_jobs "$id"
state=$(scontrol show job "$id" | grep -o 'JobState=[A-Z_]*')
echo "test job $id: $state"
[ "$state" = JobState=COMPLETED ]

# Turnaround of many tiny jobs: with the default scheduler settings this takes
# over a minute; the tuned config should finish in a few seconds.
start=$(date +%s.%N)
ids=()
for _ in $(seq "$N_BENCH"); do
    ids+=("$(sbatch --parsable -o /dev/null --wrap true)")
done
slurm_wait_jobs "${ids[@]}"
end=$(date +%s.%N)
printf '%s trivial jobs submitted and finished in %.1f s\n' "$N_BENCH" "$(awk "BEGIN {print $end - $start}")"
sinfo
