#!/usr/bin/env bash
# System packages the real-peer test environment needs (Debian/Ubuntu, run as root).
#
#   prometheus, prometheus-alertmanager, postgresql   run as our own processes by tests/env
#   default-jdk-headless, maven                       run Kafka / fetch its jars from Maven Central
#
# Idempotent: apt-get update only runs when something is missing. The packages' own
# system services are stopped and disabled again: tests/env starts private instances
# on free ports, and a system Prometheus on :9090 or PostgreSQL on :5432 would only be
# in the way (and keep CPU busy).
set -euo pipefail

PACKAGES=(prometheus prometheus-alertmanager postgresql default-jdk-headless maven)
SERVICES=(prometheus prometheus-alertmanager postgresql)

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-system-deps: all present (${PACKAGES[*]})"
  exit 0
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 tells invoke-rc.d not to start services during the install;
# removed again afterwards whatever happens.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() { if ((created_policy)); then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# In case a service was started anyway (no policy-rc.d honoured, or systemd present).
for svc in "${SERVICES[@]}"; do
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$svc ]]; then
    $SUDO /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
    $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done
# Debian's postgresql-common creates a "main" cluster; its server must not keep :5432.
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters --no-header 2>/dev/null | while read -r ver name port status _; do
    if [[ $status == online* ]]; then
      $SUDO pg_ctlcluster "$ver" "$name" stop || true
    fi
  done
fi
echo "install-system-deps: done"
