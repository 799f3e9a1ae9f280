#!/usr/bin/env bash
# Stop the daemons started by ci/slurm/setup.sh, by their pid files only.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
pidfile_stop /run/slurmd.pid
pidfile_stop /run/slurmctld.pid
# munged writes its pid file under /run/munge.
pidfile_stop /run/munge/munged.pid
echo "slurm and munge stopped"
