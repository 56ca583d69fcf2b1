#!/usr/bin/env bash
# `make image`: build the Dockerfile here with Debian's buildah, no container daemon.
#
#   1. buildah and mmdebstrap, when missing (image/install-build-deps.sh);
#   2. the base the Dockerfile's FROM names, made from Debian's packages when it is not in
#      buildah's storage yet (image/build-base.sh);
#   3. the build context: build/helm, the helm the tests use (image/stage_helm.py);
#   4. buildah bud (vfs storage, chroot isolation, layer cache), then the image id and size.
#
# Warm runs reuse the base and every unchanged layer. Env: IMAGE (default remediator:dev),
# PYTHON (to stage helm), HOST_CA (a CA bundle for pip in the build stage, default the host's).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-remediator:dev}
python=${PYTHON:-python3}
export BUILDAH_FLAGS=${BUILDAH_FLAGS:---storage-driver vfs}
read -r -a buildah <<<"buildah $BUILDAH_FLAGS"
start=$SECONDS

bash image/install-build-deps.sh
base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
[[ -n $base ]] || { echo "image: no 'ARG BASE_IMAGE=' in Dockerfile" >&2; exit 1; }
bash image/build-base.sh "$base"
PYTHONPATH=$PWD "$python" image/stage_helm.py build/helm

# Only a public URL is a source; a local clone's origin path is not (and would make every
# clone's build look different).
source=$(git remote get-url origin 2>/dev/null || true)
case $source in https://* | http://* | git@* | ssh://*) ;; *) source=unknown ;; esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The chart's default tag is its appVersion (= this version): tag that too.
versioned=${image%%:*}:$version
args=(--isolation chroot --layers --pull=never -t "$image"
  --build-arg "VERSION=$version"
  --build-arg "SOURCE=$source")
# Where TLS to PyPI is intercepted, pip in the build stage needs the host's CA bundle.
host_ca=${HOST_CA:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
if [[ -f $host_ca ]]; then
  args+=(--volume "$host_ca:/run/host-ca.pem:ro" --build-arg PIP_CERT=/run/host-ca.pem)
fi

# Warm runs: the image is rebuilt only when what goes into it changed. Each buildah step
# costs seconds with vfs even on a cache hit, so an unchanged build is skipped outright.
inputs=$({
  find Dockerfile .dockerignore pyproject.toml README.md requirements.lock \
    requirements-build.lock rules remediator build/helm -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  "${buildah[@]}" images --quiet --no-trunc "$base"
  printf '%s\n' "${args[@]}"
} | sha256sum | cut -d' ' -f1)
label=io.remediator.build-inputs
built=$("${buildah[@]}" inspect --type image --format "{{index .OCIv1.Config.Labels \"$label\"}}" "$image" 2>/dev/null || true)
if [[ $built == "$inputs" ]]; then
  "${buildah[@]}" tag "$image" "$versioned"
  size=$("${buildah[@]}" images --format '{{.Size}}' "$image")
  echo "image: $image ($versioned) is up to date (inputs $inputs), size $size; $((SECONDS - start))s"
  exit 0
fi
# The revision is not an input: a commit that changes nothing in the image (docs, tests)
# keeps the image, whose revision label then names the commit it was built from.
args+=(--label "$label=$inputs"
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)")

echo "image: buildah bud ${args[*]} ."
log=build/image-build.log
"${buildah[@]}" bud "${args[@]}" . 2>&1 | tee "$log"
id=$("${buildah[@]}" images --quiet --no-trunc "$image")
# With vfs every cached layer is a full copy of the tree, so only this build's chain of
# intermediate images (the layer cache for the next build) is kept; older ones go.
keep=$(sed -n 's/^--> \(Using cache \)\{0,1\}\([0-9a-f]\{11,\}\)$/\2/p' "$log" | cut -c1-11 | sort -u)
"${buildah[@]}" images --all --noheading --format '{{.ID}} {{.Name}}' | while read -r iid name; do
  if [[ $name == "<none>" ]] && ! grep -qx "${iid:0:11}" <<<"$keep"; then
    "${buildah[@]}" rmi "$iid" >/dev/null 2>&1 || true
  fi
done
"${buildah[@]}" tag "$image" "$versioned"
size=$("${buildah[@]}" images --format '{{.Size}}' "$image")
echo "image: $image ($versioned) id ${id#sha256:} size $size in $((SECONDS - start))s"
