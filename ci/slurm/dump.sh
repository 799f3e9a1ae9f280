#!/usr/bin/env bash
# Print the state of the test Slurm cluster; for CI's "always" step, so it
# never fails and never stops at the first missing piece.
set -uo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
section() { printf '\n===== %s =====\n' "$*"; }
section sinfo;            sinfo -N -l
section "sinfo -R";       sinfo -R
section "squeue -t all";  squeue -t all -o '%.10i %.9P %.20j %.10T %.10M %.6D %R'
section "scontrol show node"; scontrol show node
section daemons;          pgrep -a 'munged|slurmctld|slurmd'
for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
    section "tail $f"; tail -n 100 "$f"
done
exit 0
