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
# catatonit: the init process podman runs for `--init`; runc: the OCI runtime podman is told to use (below)
for p in docker.io podman catatonit runc; do
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

# --- podman: containers.conf for a machine without systemd, for podman 4.3 (Debian 12) and 5.x (Debian 13):
# explicit ulimits (else rootful runs fail with an rlimit error), cgroupfs (no systemd to manage cgroups),
# events in a file (no journald), and runc: crun (podman 5's first choice where it is installed) refuses
# these VMs' hybrid cgroup layout ("cgroups in hybrid mode not supported, drop all controllers from
# cgroupv2": v1 controllers plus a cgroup2 mount with hugetlb); runc runs there, and is docker.io's runtime
# anyway. Merged into an existing file: other keys and tables are kept. ---
CONF=${CONTAINERS_CONF:-/etc/containers/containers.conf}   # podman honours the same variable
mkdir -p "$(dirname "$CONF")"
touch "$CONF"
python3 - "$CONF" <<'PY'
import re
import sys

path = sys.argv[1]
want = {
    "containers": {"default_ulimits": '["nofile=20000:20000", "nproc=32768:32768"]'},
    "engine": {"cgroup_manager": '"cgroupfs"', "events_logger": '"file"', "runtime": '"runc"'},
}
lines = open(path).read().splitlines()
table, seen = None, set()
for i, line in enumerate(lines):
    header = re.match(r"\s*\[([A-Za-z0-9_.-]+)\]\s*$", line)
    if header:
        table = header.group(1)
        continue
    key = re.match(r"\s*([A-Za-z0-9_]+)\s*=", line)
    if key and table in want and key.group(1) in want[table]:
        lines[i] = f"{key.group(1)} = {want[table][key.group(1)]}"  # any other value still fails
        seen.add((table, key.group(1)))
for table, keys in want.items():
    missing = [k for k in keys if (table, k) not in seen]
    if not missing:
        continue
    at = next((i for i, line in enumerate(lines) if re.match(r"\s*\[%s\]\s*$" % table, line)), None)
    if at is None:
        lines += ["", f"[{table}]"]
        at = len(lines) - 1
    for k in reversed(missing):
        lines.insert(at + 1, f"{k} = {keys[k]}")
open(path, "w").write("\n".join(lines) + "\n")
PY
# podman 5 on cgroup v1 warns on every call (deprecated, still works): keep stderr clean for the tests
export PODMAN_IGNORE_CGROUPSV1_WARNING=1

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
