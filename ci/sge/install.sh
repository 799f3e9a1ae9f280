#!/usr/bin/env bash
# Runs INSIDE a bookworm container started by setup.sh with the fixed hostname:
# installs Grid Engine 8.1.9 from Debian packages (debconf preseeded, no questions),
# starts the master once to configure a one-host cell (configure.sh), adds the
# non-root job user, and stops the master again; setup.sh then commits the container.
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
# jobs run as this user (root is refused: min_uid 1000); the wrappers in ci/sge/bin submit as it
useradd -m -u "${CB_SGE_UID:-2000}" "${CB_SGE_USER:-cbjobs}"
qconf -km >/dev/null 2>&1 || true
for _ in $(seq 30); do pgrep -x sge_qmaster >/dev/null || break; sleep 1; done
