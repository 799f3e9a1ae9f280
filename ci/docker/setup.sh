#!/usr/bin/env bash
# Prepare Docker and Podman on a CI machine without systemd, and give both
# engines the test image cb-demo:latest (built from ci/rootfs.sh, no registry).
# Idempotent: every step checks first, so a second run takes seconds.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH   # /usr/bin/docker before any other docker CLI
HERE=$(cd "$(dirname "$0")" && pwd)
LOGDIR=/tmp/containerbatch-ci
IMAGE=cb-demo:latest
mkdir -p "$LOGDIR"

# --- packages (apt-get update only when something is missing) ---
missing=()
# catatonit: the init process podman runs for `--init`
for p in docker.io podman catatonit; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# --- dockerd: no systemd, so run it ourselves in the background ---
if ! /usr/bin/docker info >/dev/null 2>&1; then
    echo "starting dockerd (log: $LOGDIR/dockerd.log)" >&2
    nohup dockerd --storage-driver=overlay2 >>"$LOGDIR/dockerd.log" 2>&1 &
    pid=$!
    for _ in $(seq 60); do
        /usr/bin/docker info >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || break   # dockerd died: no point waiting
        sleep 1
    done
    if ! /usr/bin/docker info >/dev/null 2>&1; then
        echo "dockerd did not become ready (died, or >60 s); log tail:" >&2
        tail -n 50 "$LOGDIR/dockerd.log" >&2
        exit 1
    fi
fi

# --- podman: rootful podman 4.3 fails with an rlimit error unless the
# ulimits are explicit.  Merge into an existing containers.conf. ---
CONF=${CONTAINERS_CONF:-/etc/containers/containers.conf}   # podman honours the same variable
LINE='default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]'
mkdir -p "$(dirname "$CONF")"
touch "$CONF"
if ! grep -q '^[[:space:]]*default_ulimits' "$CONF"; then
    if grep -q '^\[containers\]' "$CONF"; then
        # insert right after the existing [containers] header
        sed -i "/^\[containers\]/a $LINE" "$CONF"
    else
        printf '\n[containers]\n%s\n' "$LINE" >>"$CONF"
    fi
elif ! grep -qF "$LINE" "$CONF"; then
    # Any other value (even just nofile) still hits the nproc rlimit error.
    echo "replacing default_ulimits in $CONF" >&2
    sed -i "s|^[[:space:]]*default_ulimits.*|$LINE|" "$CONF"
fi

# --- test image, imported into both engines from the same rootfs ---
if ! /usr/bin/docker image inspect "$IMAGE" >/dev/null 2>&1 \
   || ! podman image exists "$IMAGE"; then
    ROOTFS=$("$HERE/../rootfs.sh")
    if ! /usr/bin/docker image inspect "$IMAGE" >/dev/null 2>&1; then
        tar -C "$ROOTFS" -c . | /usr/bin/docker import - "$IMAGE"
    fi
    if ! podman image exists "$IMAGE"; then
        tar -C "$ROOTFS" -c . | podman import - "$IMAGE"
    fi
fi

# --- verify both engines can run the image ---
echo "docker: $(/usr/bin/docker version --format '{{.Server.Version}}')" \
     "python $(/usr/bin/docker run --rm "$IMAGE" python3 -c 'import sys; print(sys.version.split()[0])')"
echo "podman: $(podman version --format '{{.Version}}')" \
     "python $(podman run --rm "$IMAGE" python3 -c 'import sys; print(sys.version.split()[0])')"
