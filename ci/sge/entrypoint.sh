#!/usr/bin/env bash
# The container's command (under `docker run --init --hostname <fixed>`): start sge_qmaster and
# sge_execd, wait until the queue takes jobs, then stay up.  Queue instances in error state (one
# failed job can put all.q@host in E until an admin runs `qmod -c`) are cleared every 2 s and
# logged, as a site admin would: the CI cell must keep taking jobs after a test's failing job.
set -euo pipefail
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
rm -f /var/spool/gridengine/qmaster/qmaster.pid /var/spool/gridengine/execd/*/execd.pid
/usr/sbin/sge_qmaster
for _ in $(seq 30); do qconf -sh >/dev/null 2>&1 && break; sleep 0.5; done
/usr/sbin/sge_execd
while sleep 2; do
    if qstat -f -qs E 2>/dev/null | grep -q '@'; then
        echo "$(date -u +%FT%TZ) clearing queue error state: $(qstat -f -qs E -explain E 2>&1 | tr '\n' ' ')"
        qmod -c '*' >/dev/null 2>&1 || true
    fi
done
