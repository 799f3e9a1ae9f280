#!/usr/bin/env bash
# Start munged, slurmctld and slurmd, wait for the node to be idle, then run
# the command (default: sleep forever so `docker exec` can submit jobs).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /opt/cb-slurm/lib.sh   # copied there by the Dockerfile
# Nothing runs yet at container start: pid files left by a previous run
# (docker restart) are stale and their pids may now belong to someone else.
rm -f /run/slurmctld.pid /run/slurmd.pid /run/munge/munged.pid
# CB_SLURM_UID/GID (ci/slurm/run.sh): the submitting uid of the wrappers; jobs run as their submitter, who
# therefore needs an account here
uid=${CB_SLURM_UID:-0}
gid=${CB_SLURM_GID:-$uid}
if [ "$uid" != 0 ] && ! getent passwd "$uid" >/dev/null; then
    getent group "$gid" >/dev/null || groupadd -g "$gid" cbjobs
    useradd -m -u "$uid" -g "$gid" -s /bin/bash cbjobs
fi
munge_start
slurm_write_conf || true   # returns 1 when unchanged (container restart)
slurm_start
slurm_wait_idle
exec "$@"
