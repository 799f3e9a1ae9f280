#!/bin/bash
# PID 1 of the pool container: share the host folders with the job owner, then run condor_master.
#   CB_CONDOR_USER / CB_CONDOR_UID   the unprivileged owner of all jobs (root cannot own jobs)
#   CB_CONDOR_SHARED                 colon-separated host folders, bound under /cb-host at start;
#                                    each is mounted at its own path, id-mapped so that the host's
#                                    root (who owns the files there) appears as CB_CONDOR_USER
#   CB_CONDOR_SINGULARITY_JOB=0      leave SINGULARITY_JOB unset (+SingularityImage is then ignored)
set -euo pipefail
user=${CB_CONDOR_USER:-cbuser}
uid=${CB_CONDOR_UID:-1000}
host_uid=${CB_CONDOR_HOST_UID:-0}
host_gid=${CB_CONDOR_HOST_GID:-0}
if ! id "$user" >/dev/null 2>&1; then
    groupadd -g "$uid" "$user"
    useradd -m -u "$uid" -g "$uid" -s /bin/bash "$user"
fi
# user namespaces for non-root apptainer
grep -q "^$user:" /etc/subuid || echo "$user:100000:65536" >> /etc/subuid
grep -q "^$user:" /etc/subgid || echo "$user:100000:65536" >> /etc/subgid
IFS=: read -r -a shared <<< "${CB_CONDOR_SHARED:-}"
for dir in "${shared[@]}"; do
    [ -n "$dir" ] || continue
    mkdir -p "$dir"
    # host uid/gid <-> job owner (both directions, so that the map is a bijection)
    if [ "$host_uid" = "$uid" ]; then
        mount --bind "/cb-host$dir" "$dir"
    else
        map="u:$host_uid:$uid:1 u:$uid:$host_uid:1 g:$host_gid:$uid:1 g:$uid:$host_gid:1"
        mount --bind -o "X-mount.idmap=$map" "/cb-host$dir" "$dir"
    fi
done
# containers HTCondor starts (universe = container, +SingularityImage) see only the job's scratch folder and
# initialdir unless the pool binds the shared filesystem into them
printf 'SINGULARITY_BIND_EXPR = "%s"\n' "${shared[*]}" > /etc/condor/config.d/97-shared-binds.conf
if [ "${CB_CONDOR_SINGULARITY_JOB:-1}" = 1 ]; then
    cp /etc/condor/cb-singularity-job.conf /etc/condor/config.d/98-singularity-job.conf
fi
# Debian's condor lacks the test image; without it the startd never advertises HasSIF
sif=$(condor_config_val LIBEXEC)/exit_37.sif
if [ ! -s "$sif" ]; then
    apptainer build "$sif" "$(condor_config_val LIBEXEC)/singularity_test_sandbox" >/tmp/cb-condor-exit37.log 2>&1 \
        || echo "warning: could not build $sif (see /tmp/cb-condor-exit37.log)" >&2
fi
install -d -m 1777 /var/lib/condor/fs-auth
mkdir -p /var/log/condor /var/lib/condor/spool /var/lib/condor/execute /run/condor /var/lock/condor
chown -R condor:condor /var/log/condor /var/lib/condor /run/condor /var/lock/condor 2>/dev/null || true
echo "cb-condor: shared ${shared[*]:-nothing}; starting condor_master" >&2
exec condor_master -f
