#!/usr/bin/env bash
# HTCondor CI pipeline around the official all-in-one htcondor/mini container.
# Needs a registry that serves htcondor/mini (Docker Hub or a mirror); see README.
#   ci/htcondor/run.sh up|install|test|dump|down   (several verbs may be given)
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH      # /usr/bin/docker first
DOCKER=${DOCKER:-/usr/bin/docker}
IMAGE=${HTCONDOR_IMAGE:-htcondor/mini:latest}
NAME=${HTCONDOR_CONTAINER:-minicondor}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SRC=/home/submituser/containerbatch               # repo copy inside the container
PY=${HTCONDOR_PYTHON:-python3.11}                 # containerbatch needs 3.10+; EL9's python3 is 3.9

as_user() { "$DOCKER" exec -u submituser -w "$SRC" "$NAME" "$@"; }

cmd_up() {
    if [ -z "$("$DOCKER" ps -q -f "name=^${NAME}$")" ]; then
        "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true   # a stopped leftover
        # --privileged: the startd needs it to run jobs in their own namespaces.
        "$DOCKER" run -d --name "$NAME" --privileged "$IMAGE" >/dev/null
    fi
    # condor_status answers before the startd has advertised a slot: wait for one.
    for _ in $(seq 120); do
        if "$DOCKER" exec "$NAME" condor_status -af Name 2>/dev/null | grep -q .; then
            "$DOCKER" exec "$NAME" condor_status
            return 0
        fi
        sleep 1
    done
    echo "HTCondor pool in $NAME not ready after 120 s" >&2
    cmd_dump >&2
    return 1
}

cmd_install() {
    # Fresh copy each time (without .git) so the tests see the working tree.
    "$DOCKER" exec "$NAME" rm -rf "$SRC"
    "$DOCKER" exec "$NAME" mkdir -p "$SRC"
    tar -C "$REPO" --exclude=.git -c . | "$DOCKER" exec -i "$NAME" tar -C "$SRC" -x
    "$DOCKER" exec "$NAME" chown -R submituser: "$SRC"
    # The EL9-based image has Python 3.9 only; 3.11 and its pip come from AppStream (needs root).
    if ! "$DOCKER" exec "$NAME" "$PY" -m pip --version >/dev/null 2>&1; then
        "$DOCKER" exec "$NAME" sh -c "dnf install -y -q $PY $PY-pip"
    fi
    as_user "$PY" -m pip install --user -q "$SRC" pytest pytest-timeout
}

cmd_test() {
    # the live tests are deselected unless CB_HTCONDOR_LIVE=1 (tests/conftest.py)
    as_user env CB_HTCONDOR_LIVE=1 "$PY" -m pytest -v -p no:cacheprovider tests/test_htcondor_live.py
}

cmd_dump() {
    set +e   # best effort: show as much as possible
    "$DOCKER" ps -a -f "name=^${NAME}$"
    "$DOCKER" exec "$NAME" condor_status
    "$DOCKER" exec "$NAME" condor_q -allusers -better-analyze
    "$DOCKER" exec "$NAME" condor_history -limit 50
    # shellcheck disable=SC2016  # expanded by the shell inside the container
    "$DOCKER" exec "$NAME" sh -c 'for f in /var/log/condor/*Log; do echo "===== $f"; tail -n 50 "$f"; done'
    "$DOCKER" logs --tail 100 "$NAME"
    set -e
}

cmd_down() {
    "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
}

[ $# -gt 0 ] || { echo "usage: $0 up|install|test|dump|down ..." >&2; exit 2; }
for verb in "$@"; do
    case "$verb" in
        up|install|test|dump|down) "cmd_$verb" ;;
        *) echo "unknown verb: $verb" >&2; exit 2 ;;
    esac
done
