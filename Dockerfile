# remediator daemon image: Debian's Python 3.11 in a venv, Python dependencies from
# requirements.lock (hash-checked), helm at the tests' version, PostgreSQL 15 client tools.
#
#   make image                 here: builds the base from Debian's packages, stages build/helm,
#                              then `buildah bud` (see docs/image.md)
#   docker build -t remediator .   anywhere a registry is reachable, after staging build/helm
#
# build/helm must be in the build context: it is the helm binary the tests run
# (tests/env/versions.py HELM), staged by image/stage_helm.py.

# Pinned by Debian's dated tag. Not by digest: here the base is made locally from Debian's
# packages (image/build-base.sh) and tagged with this name, and a locally made tree never has
# the registry image's digest.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-20260202-slim

FROM ${BASE_IMAGE} AS build
# Only where TLS to PyPI is intercepted (as on the machine CI runs on): a CA bundle
# bind-mounted for this stage's RUNs (`make image` passes the host's; see docs/image.md).
# It never reaches the final image, and every download is hash-checked anyway.
ARG PIP_CERT
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Build tools (setuptools, wheel) pinned too, in a venv of their own that stays behind.
COPY requirements-build.lock /tmp/
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements-build.lock
# The runtime venv: every dependency exactly as locked (binary wheels only, hash-checked);
# before the source is copied, so a code change does not download them again.
COPY requirements.lock /tmp/
RUN python3 -m venv /opt/remediator \
    && /opt/remediator/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY remediator /src/remediator
# Our wheel, installed without resolving anything again; pip itself stays behind.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src \
    && /opt/remediator/bin/pip install --no-deps /wheels/*.whl \
    && /opt/remediator/bin/pip uninstall -y pip setuptools

FROM ${BASE_IMAGE}
# python3 for the venv; postgresql-client-15 for backups and reverts (its major must be at
# least the servers' major: pg_dump refuses newer servers); ca-certificates for TLS peers.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 postgresql-client-15 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
RUN groupadd --system --gid 10001 remediator \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/remediator \
        --no-create-home --shell /usr/sbin/nologin remediator \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/remediator
# Everything the daemon and its tools write goes under /var/lib/remediator (the journal
# volume): the SQLite journal, pg_dump backups (database.backup_root), helm's and
# client-go's caches ($HOME, HELM_*_HOME). The root filesystem can be read-only.
ENV PATH=/opt/remediator/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/var/lib/remediator \
    HELM_CACHE_HOME=/var/lib/remediator/helm/cache \
    HELM_CONFIG_HOME=/var/lib/remediator/helm/config \
    HELM_DATA_HOME=/var/lib/remediator/helm/data \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REMEDIATOR_RULES_PATH=/etc/remediator/rules \
    REMEDIATOR_JOURNAL__URL=sqlite:////var/lib/remediator/journal.db \
    REMEDIATOR_DATABASE__BACKUP_ROOT=/var/lib/remediator/backups \
    REMEDIATOR_LOG__FORMAT=json
USER 10001:10001
WORKDIR /var/lib/remediator
VOLUME /var/lib/remediator
EXPOSE 9095
# Listening beyond loopback needs a credential: REMEDIATOR_WEBHOOK_TOKEN_FILE (a mounted
# Secret) or a principals file (REMEDIATOR_AUTH__PRINCIPALS_FILE). The daemon handles
# SIGTERM itself (drain within shutdown.timeout_seconds), so no init process is needed.
ENTRYPOINT ["remediator"]
CMD ["run", "--listen", "0.0.0.0:9095"]
# What changes most comes last, so warm rebuilds redo only these steps.
COPY build/helm /usr/local/bin/helm
COPY rules /etc/remediator/rules
COPY --from=build /opt/remediator /opt/remediator
ARG BASE_IMAGE
ARG VERSION=0.1.0.dev0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="remediator" \
      org.opencontainers.image.description="Event-driven alert-to-remediation daemon for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
