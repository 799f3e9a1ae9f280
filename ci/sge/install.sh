#!/usr/bin/env bash
# Runs INSIDE a bookworm container started by setup.sh with the fixed hostname:
# installs Grid Engine 8.1.9 from Debian packages (debconf preseeded, no questions),
# starts the master once to configure a one-host cell (configure.sh), makes the submitting uid the job
# user, and stops the master again; setup.sh then commits the container.
set -euo pipefail
host=$(hostname)
for pkg in gridengine-master gridengine-common gridengine-client; do
    cat <<EOT
$pkg shared/gridenginemaster string $host
$pkg shared/gridenginecell string default
$pkg shared/gridengineconfig boolean true
EOT
done | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends gridengine-master gridengine-exec gridengine-client procps >/tmp/apt.log 2>&1 \
    || { tail -50 /tmp/apt.log; exit 1; }
rm -rf /var/lib/apt/lists/*
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
/usr/sbin/sge_qmaster
for _ in $(seq 30); do qconf -sh >/dev/null 2>&1 && break; sleep 1; done
bash /opt/cb-sge/configure.sh
# Jobs run as the uid that runs the tests on the host (the submitter and the job user are one, as on a
# real cluster: the job folder's private files, such as env.sh at mode 0600, are the submitter's).  For
# root that needs min_uid/min_gid 0 (Grid Engine refuses uids below 1000 by default); any other uid gets a
# user of its own here.  The wrappers in ci/sge/bin submit as that uid.
uid=${CB_SGE_UID:-0}
if [ "$uid" = 0 ]; then
    qconf -sconf > /tmp/global
    sed -i -e "s/^min_uid .*/min_uid 0/" -e "s/^min_gid .*/min_gid 0/" /tmp/global
    qconf -Mconf /tmp/global
else
    getent passwd "$uid" >/dev/null || useradd -m -u "$uid" cbjobs
fi
qconf -km >/dev/null 2>&1 || true
for _ in $(seq 30); do pgrep -x sge_qmaster >/dev/null || break; sleep 1; done
