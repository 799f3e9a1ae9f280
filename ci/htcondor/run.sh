#!/usr/bin/env bash
# A one-container HTCondor pool with Apptainer, built from Debian packages on this machine (no registry).
#   bash ci/htcondor/run.sh up      build the node image (if needed), start the pool, write ci/htcondor/bin/
#   bash ci/htcondor/run.sh down    remove the container and ci/htcondor/bin/ (the image stays, for reuse)
#   bash ci/htcondor/run.sh dump    condor_status, condor_q -better-analyze, history, daemon logs (never fails)
#   bash ci/htcondor/run.sh status  exit 0 when the pool is up and has a slot
#   bash ci/htcondor/run.sh base    build (or reuse) only the Debian base image and print its name
# After `up`, PATH=$PWD/ci/htcondor/bin:$PATH is all a caller needs: condor_submit, condor_q, condor_history,
# condor_rm, condor_release, condor_hold, condor_status and apptainer act on the pool (and its apptainer)
# in the caller's working directory.
#
# Environment:
#   CB_CONDOR_SUITE   sid (default: HTCondor 25.x, Apptainer 1.4) or trixie (HTCondor 23.x, apptainer from sid)
#   CB_CONDOR_SHARE   more host folders (colon-separated) shared with the pool at the same paths;
#                     /tmp and the checkout always are (a running pool keeps its set: `down` first)
#   CB_CONDOR_NAME    container name (default cb-condor-SUITE)
#   CB_CONDOR_BIN     where `up` writes the wrappers (default ci/htcondor/bin, for trixie ci/htcondor/bin-trixie)
#   CB_CONDOR_USER    owner of the jobs inside (default cbuser, uid CB_CONDOR_UID=1000)
#   CB_CONDOR_SINGULARITY_JOB=0  start the pool without SINGULARITY_JOB (+SingularityImage is then ignored)
#   CB_CACHE_DIR      where the debootstrap root is kept between runs (default /tmp/cb-cache-condor)
#   DOCKER            the docker client (default /usr/bin/docker)
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DOCKER=${DOCKER:-/usr/bin/docker}
SUITE=${CB_CONDOR_SUITE:-sid}
NAME=${CB_CONDOR_NAME:-cb-condor-$SUITE}
USER_IN=${CB_CONDOR_USER:-cbuser}
UID_IN=${CB_CONDOR_UID:-1000}
CACHE=${CB_CACHE_DIR:-/tmp/cb-cache-condor}
MIRROR=${CB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=cb-condor-base:$SUITE
NODE_IMAGE=cb-condor-node:$SUITE
# the main (sid) pool's wrappers are in bin/; another suite's in bin-SUITE/ (both pools may run at once)
if [ "$SUITE" = sid ]; then BIN=${CB_CONDOR_BIN:-$HERE/bin}; else BIN=${CB_CONDOR_BIN:-$HERE/bin-$SUITE}; fi
WRAPPED=(condor_submit condor_q condor_history condor_rm condor_release condor_hold condor_status
    condor_config_val condor_reconfig apptainer)

log() { echo "ci/htcondor: $*" >&2; }

# the image's inputs: rebuilt when any of them changes
recipe_hash() { cat "$HERE/Dockerfile" "$HERE/condor.conf" "$HERE/singularity-job.conf" "$HERE/entrypoint.sh" \
    | sha256sum | cut -c1-16; }

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
}

build_base() {
    "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    local root=$CACHE/rootfs-$SUITE
    mkdir -p "$CACHE"
    exec 8>"$CACHE/rootfs-$SUITE.lock"
    flock 8
    if [ ! -f "$root/.cb-complete" ]; then
        ensure_debootstrap
        # bookworm's debootstrap may lack a script for a newer suite: all of them are sid's
        local script=/usr/share/debootstrap/scripts/$SUITE
        [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
        rm -rf "$root.tmp"
        log "debootstrap $SUITE (about a minute)"
        debootstrap --variant=minbase --include=python3 "$SUITE" "$root.tmp" "$MIRROR" "$script" >&2
        rm -rf "$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp"/var/lib/apt/lists/*
        touch "$root.tmp/.cb-complete"
        rm -rf "$root"
        mv "$root.tmp" "$root"
    fi
    tar -C "$root" --exclude=./.cb-complete -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
    exec 8>&-
}

build_node() {
    local want
    want=$(recipe_hash)
    if [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "cb.recipe"}}' "$NODE_IMAGE" 2>/dev/null)" = "$want" ]
    then
        return 0
    fi
    build_base
    log "building $NODE_IMAGE (apt-get install condor apptainer ...)"
    "$DOCKER" build -q -t "$NODE_IMAGE" --label "cb.recipe=$want" \
        --build-arg "BASE=$BASE_IMAGE" --build-arg "SUITE=$SUITE" "$HERE" >&2
}

shared_dirs() {
    local dirs=(/tmp "$REPO") extra d
    IFS=: read -r -a extra <<< "${CB_CONDOR_SHARE:-}"
    for d in "${extra[@]}"; do
        [ -n "$d" ] || continue
        case "$d" in /*) ;; *) echo "CB_CONDOR_SHARE: $d is not an absolute path" >&2; exit 2 ;; esac
        [ -d "$d" ] || { echo "CB_CONDOR_SHARE: $d is not a folder" >&2; exit 2; }
        dirs+=("$(cd "$d" && pwd -P)")
    done
    for d in "${dirs[@]}"; do
        case "$d" in *[[:space:]\'\"]* | *:*) echo "cannot share $d with the pool: blanks, quotes or ':' in the path" >&2
            exit 2 ;;
        esac
    done
    # drop folders inside another shared one
    local out=() a b inside
    for a in "${dirs[@]}"; do
        inside=0
        for b in "${dirs[@]}"; do
            [ "$a" != "$b" ] && case "$a/" in "$b"/*) inside=1 ;; esac
        done
        [ $inside = 1 ] || out+=("$a")
    done
    printf '%s\n' "${out[@]}" | sort -u
}

running() { [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ]; }

write_bin() {
    local shared=$1 tool
    rm -rf "$BIN.tmp"
    mkdir -p "$BIN.tmp"
    # one wrapper, linked under every name: `docker exec` as the job owner, in the caller's folder when
    # the pool sees it (a shared folder), else in the owner's home
    cat > "$BIN.tmp/cb-condor-exec" <<EOF
#!/bin/bash
# generated by ci/htcondor/run.sh up: runs \$(basename \$0) in the pool container $NAME as $USER_IN
shared='$shared'
tool=\${0##*/}
wd=/home/$USER_IN
for d in \$shared; do
    case "\$PWD/" in "\$d"/*) wd=\$PWD; break ;; esac
done
env=()
for v in \$(compgen -e); do
    # only what apptainer reads; never CONDOR_CONFIG or _CONDOR_* (this host's settings would replace the pool's)
    case "\$v" in APPTAINER*|SINGULARITY*) env+=(-e "\$v") ;; esac
done
exec $DOCKER exec -i -u $USER_IN -w "\$wd" "\${env[@]}" $NAME "\$tool" "\$@"
EOF
    chmod 755 "$BIN.tmp/cb-condor-exec"
    for tool in "${WRAPPED[@]}"; do
        ln -s cb-condor-exec "$BIN.tmp/$tool"
    done
    rm -rf "$BIN"
    mv "$BIN.tmp" "$BIN"
}

wait_for_slot() {
    local i
    for i in $(seq 120); do
        if "$DOCKER" exec "$NAME" condor_status -af Name 2>/dev/null | grep -q .; then
            return 0
        fi
        running || break
        sleep 1
    done
    return 1
}

cmd_up() {
    local shared start
    start=$(date +%s)
    shared=$(shared_dirs | tr '\n' ' ')
    build_node
    if ! running; then
        "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
        local mounts=() d
        for d in $shared; do
            mounts+=(-v "$d:/cb-host$d")
        done
        # not --privileged (fails on VMs without CAP_SYS_RESOURCE): SYS_ADMIN for the id-mapped mounts and
        # the starter's namespaces, /dev/fuse and no seccomp filter for apptainer's user namespaces + squashfuse
        "$DOCKER" run -d --name "$NAME" --hostname "$NAME" \
            --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
            --security-opt systempaths=unconfined \
            --device /dev/fuse "${mounts[@]}" \
            -e "CB_CONDOR_SHARED=$(echo "$shared" | tr ' ' ':')" -e "CB_CONDOR_USER=$USER_IN" \
            -e "CB_CONDOR_UID=$UID_IN" -e "CB_CONDOR_HOST_UID=$(id -u)" -e "CB_CONDOR_HOST_GID=$(id -g)" \
            -e "CB_CONDOR_SINGULARITY_JOB=${CB_CONDOR_SINGULARITY_JOB:-1}" \
            --label cb.owner=ci/htcondor "$NODE_IMAGE" >/dev/null
    fi
    if ! wait_for_slot; then
        log "the pool in $NAME has no slot after 120 s"
        cmd_dump >&2
        return 1
    fi
    write_bin "$shared"
    log "pool $NAME up in $(( $(date +%s) - start )) s: $("$DOCKER" exec "$NAME" condor_version | head -1)"
    log "shared with the pool at the same paths: $shared"
    log "use it with: PATH=$BIN:\$PATH"
}

cmd_status() {
    running && "$DOCKER" exec "$NAME" condor_status -af Name HasSingularity HasSIF | grep -q .
}

cmd_dump() {
    set +e
    "$DOCKER" ps -a -f "name=^${NAME}$"
    "$DOCKER" exec "$NAME" condor_version
    "$DOCKER" exec "$NAME" condor_status -long -limit 1
    "$DOCKER" exec "$NAME" condor_q -allusers -better-analyze
    "$DOCKER" exec "$NAME" condor_history -limit 30
    # shellcheck disable=SC2016  # expanded inside the container
    "$DOCKER" exec "$NAME" sh -c 'for f in /var/log/condor/*Log /var/log/condor/StarterLog*; do
        [ -f "$f" ] && { echo "===== $f"; tail -n 60 "$f"; }; done'
    "$DOCKER" logs --tail 50 "$NAME"
    set -e
    return 0
}

cmd_down() {
    "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "$BIN" "$BIN.tmp"
}

# the debootstrap'ed Debian root as a Docker image (also a base for ci/slurm's Dockerfile); prints its name
cmd_base() {
    build_base
    echo "$BASE_IMAGE"
}

[ $# -gt 0 ] || { echo "usage: $0 up|down|dump|status|base ..." >&2; exit 2; }
for verb in "$@"; do
    case "$verb" in
        up | down | dump | status | base) "cmd_$verb" ;;
        *) echo "unknown verb: $verb (up, down, dump, status, base)" >&2; exit 2 ;;
    esac
done
