#!/usr/bin/env bash
# Make the Dockerfile's base image locally from Debian's packages, where no registry is
# reachable: mmdebstrap --variant=minbase bookworm into a folder, then `buildah from scratch`,
# copy the tree in, `buildah commit`, tagged exactly as the Dockerfile's FROM names it.
#
# The tag is Debian's dated one (pinned); a digest cannot be pinned here, since a tree made
# locally never has the registry image's digest. Where the registry is reachable the same
# Dockerfile pulls the real image instead (see docs/image.md).
#
# Skips everything when the tag already exists in buildah's storage (warm runs).
# Usage: build-base.sh <tag>   (BUILDAH_FLAGS, DEBIAN_MIRROR, DEBIAN_SECURITY from the env)
set -euo pipefail

tag=${1:?usage: build-base.sh <tag>}
buildah_flags=${BUILDAH_FLAGS:---storage-driver vfs}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

# shellcheck disable=SC2086
if buildah $buildah_flags inspect --type image "$tag" >/dev/null 2>&1; then
  echo "build-base: $tag already in buildah's storage"
  exit 0
fi

start=$SECONDS
work=$(mktemp -d /var/tmp/remediator-base.XXXXXX)
container=
cleanup() {
  # shellcheck disable=SC2086
  if [[ -n $container ]]; then buildah $buildah_flags rm "$container" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "build-base: mmdebstrap bookworm (minbase) from $mirror"
# Like Debian's -slim images: no manuals, no documentation beyond copyright files, no
# translations; apt lists emptied at the end.
mmdebstrap --variant=minbase --quiet \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
  bookworm "$work/rootfs" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main"

# shellcheck disable=SC2086
container=$(buildah $buildah_flags from scratch)
# shellcheck disable=SC2086
mnt=$(buildah $buildah_flags mount "$container")
cp -a "$work/rootfs/." "$mnt/"
# shellcheck disable=SC2086
buildah $buildah_flags umount "$container" >/dev/null
# shellcheck disable=SC2086
buildah $buildah_flags config \
  --cmd bash \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --label org.opencontainers.image.description="Debian bookworm minbase, made locally by image/build-base.sh" \
  "$container"
# shellcheck disable=SC2086
buildah $buildah_flags commit --quiet --rm "$container" "$tag" >/dev/null
container=
echo "build-base: committed $tag in $((SECONDS - start))s"
