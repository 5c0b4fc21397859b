#!/bin/bash
# Installs what `make test` needs on a fresh Debian 12 machine: systemd's
# tools (systemd-socket-activate, systemd-analyze), the .deb tool chain, tmux
# (the terminal waiterctl top is tested in), and
# what the end-to-end suite boots a container with. Idempotent.
set -euo pipefail
need=(systemd systemd-container debootstrap zstd dpkg-dev debhelper fakeroot lintian iproute2 procps gcc tmux)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/deps.sh: missing packages (${missing[*]}): run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "deps: ok"
