#!/usr/bin/env bash
# Make the local stand-in for python:3.11-slim-bookworm from Debian packages, for
# machines that reach Debian's mirror but no image registry (CI here):
#
#   debootstrap --variant=minbase bookworm  +  python3, pip, ca-certificates
#   -> docker import  -> refinery-base:bookworm   (about 30-60 s)
#
# Like the official image: `python` and `pip` on PATH, pip installs into
# /usr/local as root (Debian's EXTERNALLY-MANAGED marker is removed: this
# interpreter belongs to the image, as in python:3.11-slim). Python is Debian's
# 3.11. Does nothing when the image already exists (FORCE=1 remakes it).
#
#   bash scripts/docker_base_image.sh [image]      (root; needs debootstrap and docker)
set -euo pipefail

IMAGE="${1:-${REFINERY_BASE_IMAGE:-refinery-base:bookworm}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf 'docker_base_image: %s\n' "$*"; }
die() { printf 'docker_base_image: ERROR: %s\n' "$*" >&2; exit 1; }

if [ -z "${FORCE:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE exists"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root (run as root, or make $IMAGE elsewhere and docker load it)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: apt-get install -y debootstrap"

ROOTFS="$(mktemp -d /tmp/refinery-rootfs.XXXXXX)"
cleanup() {
    # debootstrap may leave /proc and /sys mounted in the rootfs when it fails
    umount -l "$ROOTFS/proc" "$ROOTFS/sys" 2>/dev/null || true
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$SECONDS
say "debootstrap --variant=minbase bookworm from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 ||
    { tail -n 20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; die "debootstrap failed"; }
rm -f "$ROOTFS.log"

# The image's own Python, as in python:3.11-slim: python/pip on PATH, pip installs to /usr/local.
rm -f "$ROOTFS"/usr/lib/python3.*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
# The host's own CAs (a TLS-intercepting proxy's, say) so that pip inside the builds gets through as
# the host's pip does; Debian's pip reads the system bundle.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the image"
fi
# Slim like the official image: no apt lists, package cache, docs or man pages.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/*

tar --numeric-owner -C "$ROOTFS" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$IMAGE" >/dev/null
say "$IMAGE made in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
