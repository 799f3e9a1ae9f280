#!/usr/bin/env bash
# Build (or reuse) a minimal Debian bookworm root filesystem with python3.
# It is the one image every test and the README use: imported into Docker and
# Podman as cb-demo:latest, and used as a sandbox-directory image by the
# apptainer test double.  The cache under /tmp speeds up repeated runs on one
# machine; nothing depends on it being there.
# Prints the path of the root filesystem directory on stdout.
set -euo pipefail
CACHE=${CB_CACHE_DIR:-/tmp/containerbatch-cache}
ROOT="$CACHE/rootfs-bookworm"
mkdir -p "$CACHE"
exec 9>"$CACHE/rootfs.lock"
flock 9
if [ ! -x "$ROOT/usr/bin/python3" ] || [ ! -f "$ROOT/.cb-complete" ]; then
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
    fi
    rm -rf "$ROOT.tmp"
    debootstrap --variant=minbase --include=python3 bookworm "$ROOT.tmp" >&2
    # apt caches are not part of the image
    rm -rf "$ROOT.tmp"/var/cache/apt/archives/*.deb "$ROOT.tmp"/var/lib/apt/lists/*
    touch "$ROOT.tmp/.cb-complete"
    rm -rf "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
fi
echo "$ROOT"
