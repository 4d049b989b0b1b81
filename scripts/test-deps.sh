#!/usr/bin/env bash
# Installs what the full test suite needs when it is missing: Debian's chromium (browser
# tests) and the pinned TypeScript compiler (type checks of the browser client). Idempotent;
# runs as root (CI) or through sudo.
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
