#!/usr/bin/env bash
# A one-container Slurm cluster built from Debian packages on this machine (no registry), beside the host's
# own (ci/slurm/setup.sh): by default Slurm 24.11 from Debian trixie, whatever the host runs.
#   bash ci/slurm/run.sh up      build the node image (if needed), start the cluster, write ci/slurm/bin-SUITE/
#   bash ci/slurm/run.sh down    remove the container and the bin folder (the images stay, for reuse)
#   bash ci/slurm/run.sh dump    sinfo, squeue, node state, daemon logs (never fails)
#   bash ci/slurm/run.sh status  exit 0 when the cluster is up and its node takes jobs
# After `up`, PATH=$PWD/ci/slurm/bin-trixie:$PATH is all a caller needs: sbatch, squeue, sacct, scancel,
# scontrol, sinfo and srun act on that cluster in the caller's working directory, as the caller's uid.
# The node has python3 and luigi (the containerbatch runner with runtime host works there) but no
# container engine.
#
# The image: the Debian root of ci/htcondor/run.sh base (debootstrap, shared with the HTCondor pool of the
# same suite), then ./Dockerfile (slurmctld, slurmd, munge and the configuration of lib.sh, as on the host),
# then node.Dockerfile (luigi, from wheels downloaded on the host).
#
# Environment:
#   CB_SLURM_SUITE   Debian suite of the cluster (default trixie: Slurm 24.11; only trixie is tested)
#   CB_SLURM_SHARE   more host folders (colon-separated) shared with the cluster at the same paths;
#                    /tmp and the checkout always are (a running cluster keeps its set: `down` first)
#   CB_SLURM_NAME    container name (default cb-slurm-SUITE; also its hostname, the node's name)
#   CB_SLURM_BIN     where `up` writes the wrappers (default ci/slurm/bin-SUITE)
#   CB_SLURM_CACHE   where the luigi wheels are kept between runs (default /tmp/cb-cache-slurm; the
#                    Debian root is ci/htcondor/run.sh's, under its CB_CACHE_DIR)
#   DOCKER           the docker client (default /usr/bin/docker)
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DOCKER=${DOCKER:-/usr/bin/docker}
SUITE=${CB_SLURM_SUITE:-trixie}
NAME=${CB_SLURM_NAME:-cb-slurm-$SUITE}
BIN=${CB_SLURM_BIN:-$HERE/bin-$SUITE}
CACHE=${CB_SLURM_CACHE:-/tmp/cb-cache-slurm}
CLUSTER_IMAGE=cb-slurm:$SUITE
NODE_IMAGE=cb-slurm-node:$SUITE
WRAPPED=(sbatch squeue sacct scancel scontrol sinfo srun)

log() { echo "ci/slurm: $*" >&2; }

case "$NAME" in
    *[!A-Za-z0-9-]* | -* | "") echo "CB_SLURM_NAME=$NAME: letters, digits and '-' only (it is the node's hostname)" >&2
        exit 2 ;;
esac

# what luigi the node gets: the project's own requirement
luigi_requirement() {
    local req
    req=$(grep -o '"luigi[^"]*"' "$REPO/pyproject.toml" | head -1 | tr -d '"')
    echo "${req:-luigi}"
}

# the image's inputs: rebuilt when any of them changes
recipe_hash() {
    { cat "$HERE/Dockerfile" "$HERE/node.Dockerfile" "$HERE/lib.sh" "$HERE/entrypoint.sh"; luigi_requirement; } \
        | sha256sum | cut -c1-16
}

# luigi and its dependencies as wheels for the image's Python, downloaded with the host's pip into $1/wheels
# (explicit returns: callers use it in a && chain, where set -e does not apply)
download_wheels() {
    local into=$1 base=$2 pyver arch cached
    pyver=$("$DOCKER" run --rm "$base" python3 -c 'import sys; print("%d%d" % sys.version_info[:2])') || return 1
    arch=$(uname -m)
    cached=$CACHE/wheels-cp$pyver-$arch
    if [ ! -f "$cached/.cb-complete" ]; then
        rm -rf "$cached.tmp"
        mkdir -p "$cached.tmp"
        log "pip download $(luigi_requirement) pip for cp$pyver"
        python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
            --python-version "$pyver" --implementation cp --abi "cp$pyver" \
            --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
            -d "$cached.tmp" "$(luigi_requirement)" pip >&2 || return 1
        touch "$cached.tmp/.cb-complete"
        rm -rf "$cached"
        mv "$cached.tmp" "$cached" || return 1
    fi
    mkdir -p "$into/wheels" && cp "$cached"/*.whl "$into/wheels/"
}

build_node() {
    local want base ctx
    want=$(recipe_hash)
    if [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "cb.recipe"}}' "$NODE_IMAGE" 2>/dev/null)" = "$want" ]
    then
        return 0
    fi
    # the debootstrap'ed Debian root (cached under /tmp/cb-cache-condor; the HTCondor pool of that suite shares it)
    base=$(CB_CONDOR_SUITE=$SUITE bash "$REPO/ci/htcondor/run.sh" base | tail -1)
    log "building $CLUSTER_IMAGE (apt-get install slurmctld slurmd slurm-client munge)"
    "$DOCKER" build -q -t "$CLUSTER_IMAGE" --build-arg "BASE=$base" "$HERE" >&2
    mkdir -p "$CACHE"
    ctx=$(mktemp -d "$CACHE/context.XXXXXX")
    local ok=0
    log "building $NODE_IMAGE (luigi for the node's python3)"
    download_wheels "$ctx" "$base" \
        && "$DOCKER" build -q -t "$NODE_IMAGE" --label "cb.recipe=$want" --build-arg "BASE=$CLUSTER_IMAGE" \
            -f "$HERE/node.Dockerfile" "$ctx" >&2 \
        || ok=$?
    rm -rf "$ctx"
    return "$ok"
}

# shellcheck source=../shared_dirs.sh
. "$HERE/../shared_dirs.sh"

running() { [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ]; }

node_ready() {
    local state
    state=$("$DOCKER" exec "$NAME" sinfo -h -o %T 2>/dev/null) || return 1
    case "$state" in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac
}

write_bin() {
    local shared=$1 tool
    rm -rf "$BIN.tmp"
    mkdir -p "$BIN.tmp"
    # one wrapper, linked under every name: `docker exec` as the caller's uid (jobs run as their submitter),
    # in the caller's folder when the cluster sees it (a shared folder), else in /
    cat > "$BIN.tmp/cb-slurm-exec" <<EOF
#!/bin/bash
# generated by ci/slurm/run.sh up: runs \$(basename \$0) in the Slurm container $NAME as the caller's uid
shared='$shared'
tool=\${0##*/}
wd=/
for d in \$shared; do
    case "\$PWD/" in "\$d"/*) wd=\$PWD; break ;; esac
done
env=()
for v in \$(compgen -e); do
    # the commands' own input variables; never SLURM_CONF (this host's configuration is not the cluster's)
    case "\$v" in SBATCH_*|SQUEUE_*|SACCT_*|SINFO_*|SCANCEL_*|SCONTROL_*|SRUN_*|SLURM_TIME_FORMAT) env+=(-e "\$v") ;; esac
done
exec $DOCKER exec -i -u "\$(id -u):\$(id -g)" -w "\$wd" "\${env[@]}" $NAME "\$tool" "\$@"
EOF
    chmod 755 "$BIN.tmp/cb-slurm-exec"
    for tool in "${WRAPPED[@]}"; do
        ln -s cb-slurm-exec "$BIN.tmp/$tool"
    done
    rm -rf "$BIN"
    mv "$BIN.tmp" "$BIN"
}

cmd_up() {
    local shared start i
    start=$(date +%s)
    shared=$(shared_dirs CB_SLURM_SHARE 'the cluster' | tr '\n' ' ')
    build_node
    if ! running; then
        "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
        local mounts=() d
        for d in $shared; do
            mounts+=(-v "$d:$d")
        done
        # the entrypoint gives the caller's uid an account (jobs run as their submitter) and starts
        # munged, slurmctld and slurmd with lib.sh's configuration; no extra privileges are needed
        "$DOCKER" run -d --name "$NAME" --hostname "$NAME" "${mounts[@]}" \
            -e "CB_SLURM_UID=$(id -u)" -e "CB_SLURM_GID=$(id -g)" \
            --label cb.owner=ci/slurm "$NODE_IMAGE" >/dev/null
    fi
    for i in $(seq 120); do
        node_ready && break
        running || break
        sleep 0.5
    done
    if ! node_ready; then
        log "the Slurm cluster in $NAME has no idle node after ${i:-0} tries"
        cmd_dump >&2
        return 1
    fi
    write_bin "$shared"
    log "cluster $NAME up in $(( $(date +%s) - start )) s: $("$DOCKER" exec "$NAME" sinfo -V)"
    log "shared with the cluster at the same paths: $shared"
    log "use it with: PATH=$BIN:\$PATH"
}

cmd_status() {
    running && node_ready
}

cmd_dump() {
    set +e
    "$DOCKER" ps -a -f "name=^${NAME}$"
    "$DOCKER" exec "$NAME" sinfo -V
    "$DOCKER" exec "$NAME" bash /opt/cb-slurm/dump.sh
    "$DOCKER" logs --tail 50 "$NAME"
    set -e
    return 0
}

cmd_down() {
    "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "$BIN" "$BIN.tmp"
}

[ $# -gt 0 ] || { echo "usage: $0 up|down|dump|status ..." >&2; exit 2; }
for verb in "$@"; do
    case "$verb" in
        up | down | dump | status) "cmd_$verb" ;;
        *) echo "unknown verb: $verb (up, down, dump, status)" >&2; exit 2 ;;
    esac
done
