#!/usr/bin/env bash
# Installs what the full test suite needs when it is missing: Debian's chromium (browser
# tests), Firefox ESR (a patient on Firefox, TestNetnsFirefox*), coturn (turnutils_uclient
# drives the TURN tests; turnserver is the benchmark's reference), iproute2 and nftables
# (network-namespace tests) and the pinned TypeScript compiler (type checks of the browser
# client). Idempotent; runs as root (CI) or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "test-deps: need root to run: $*" >&2; exit 1; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    echo "test-deps: apt-get update" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  echo "test-deps: installing $*" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ ! -x /usr/lib/chromium/chromium ]; then
  apt_install chromium
fi
if [ ! -x /usr/bin/firefox-esr ]; then
  apt_install firefox-esr
fi
# coturn: only its client tools and the turnserver binary are used, by the tests and the
# benchmark, which start and stop what they need. The package's own daemon must not start or
# stay enabled: a policy-rc.d refuses service starts during the install, and the unit is
# disabled afterwards.
if ! command -v turnutils_uclient >/dev/null || ! command -v turnserver >/dev/null; then
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    made_policy=1
  fi
  apt_install coturn
  if [ -n "$made_policy" ]; then as_root rm -f "$policy"; fi
fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  as_root systemctl disable --now coturn >/dev/null 2>&1 || true
fi
if [ -f /etc/default/coturn ]; then
  as_root sed -i 's/^#*TURNSERVER_ENABLED=.*/TURNSERVER_ENABLED=0/' /etc/default/coturn || true
fi
if [ -x /etc/init.d/coturn ] && { [ -f /run/turnserver.pid ] || [ -f /run/turnserver/turnserver.pid ]; }; then
  as_root /etc/init.d/coturn stop >/dev/null 2>&1 || true
fi
# network-namespace tests: ip (iproute2), nft (nftables)
if ! command -v ip >/dev/null; then
  apt_install iproute2
fi
if ! command -v nft >/dev/null; then
  apt_install nftables
fi
# fonts so that pages render text in screenshots
if ! fc-list 2>/dev/null | grep -qi dejavu; then
  apt_install fonts-dejavu-core || true
fi

want_ts=$(sed -n 's/.*"typescript": "\([0-9.]*\)".*/\1/p' package.json)
have_ts=$(node -p "require('./node_modules/typescript/package.json').version" 2>/dev/null || true)
if [ ! -x node_modules/.bin/tsc ] || [ "$want_ts" != "$have_ts" ]; then
  if ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
  echo "test-deps: npm ci (typescript, pinned in package-lock.json)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
