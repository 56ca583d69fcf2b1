#!/usr/bin/env bash
# What `make image` needs on the host (Debian/Ubuntu, as root): buildah builds and runs the
# image with no container daemon; mmdebstrap makes its base from Debian's packages.
# Idempotent: apt-get update only runs when something is missing.
set -euo pipefail

PACKAGES=(buildah mmdebstrap)
SUDO=
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-build-deps: all present (${PACKAGES[*]})"
  exit 0
fi
echo "install-build-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
