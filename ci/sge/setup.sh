#!/usr/bin/env bash
# A one-node Grid Engine 8.1.9 (Debian bookworm packages) in a container, for tests/test_sge_live.py.
#   bash ci/sge/setup.sh        # build the image once (~15 s), start the container, wait for the queue
# The image is made by running install.sh in a container with the fixed hostname and committing it
# (no registry needed: the base is cb-demo:latest from ci/docker/setup.sh).  The container shares /tmp
# and this checkout at the same paths; ci/sge/bin holds qsub, qstat, qacct, qdel, qhold, qrls, qmod
# wrappers that run the real command in it as the caller's uid (the job user), in the caller's folder.
# Idempotent: a running, ready container is left alone.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NAME=${CB_SGE_CONTAINER:-cb-sge}
UID_=$(id -u)
IMAGE=${CB_SGE_IMAGE:-cb-sge:8.1.9-uid$UID_}
HOST=${CB_SGE_HOSTNAME:-cb-sge-host}
BASE=${CB_SGE_BASE:-cb-demo:latest}
D=/usr/bin/docker

ready() { "$HERE/bin/qstat" -f -q all.q 2>/dev/null | grep -q "all.q@$HOST" \
          && ! "$HERE/bin/qstat" -f -q all.q 2>/dev/null | grep "all.q@$HOST" | grep -qE ' [a-zA-Z]*[uEdD][a-zA-Z]*$'; }

if [ "$($D inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ] && ready; then
    echo "Grid Engine: container $NAME already up"
    exit 0
fi
$D rm -f "$NAME" >/dev/null 2>&1 || true
if ! $D image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "building $IMAGE from $BASE" >&2
    $D rm -f "$NAME-build" >/dev/null 2>&1 || true
    $D run --name "$NAME-build" --hostname "$HOST" -e CB_SGE_UID="$UID_" -v "$HERE:/opt/cb-sge:ro" "$BASE" \
        bash /opt/cb-sge/install.sh >&2
    $D commit --change 'ENV SGE_ROOT=/var/lib/gridengine SGE_CELL=default' \
        --change 'CMD ["bash", "/opt/cb-sge/entrypoint.sh"]' "$NAME-build" "$IMAGE" >/dev/null
    $D rm -f "$NAME-build" >/dev/null
fi
mounts=(-v /tmp:/tmp -v "$HERE:/opt/cb-sge:ro")
case "$ROOT" in /tmp/*) ;; *) mounts+=(-v "$ROOT:$ROOT") ;; esac
$D run -d --init --name "$NAME" --hostname "$HOST" "${mounts[@]}" "$IMAGE" >/dev/null
started=$(date +%s)
for _ in $(seq 60); do ready && break; sleep 0.5; done
if ! ready; then
    echo "Grid Engine did not come up; container log:" >&2
    $D logs "$NAME" 2>&1 | tail -30 >&2
    "$HERE/bin/qstat" -f >&2 || true
    exit 1
fi
echo "Grid Engine 8.1.9: $NAME (hostname $HOST) takes jobs after $(( $(date +%s) - started )) s"
