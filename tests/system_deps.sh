#!/usr/bin/env bash
# Installs the system programs the tests (and, with --bench, the benchmarks) start for
# real: Debian's prometheus/promtool; haproxy and wrk for the proxy benchmark. As root it
# installs what is missing; otherwise it stops, saying how to install it.
set -u
want=(prometheus chromium)
if [ "${1:-}" = "--bench" ]; then want+=(haproxy wrk); fi
missing=()
for pkg in "${want[@]}"; do
  case "$pkg" in
    prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus) ;;
    *) command -v "$pkg" >/dev/null || missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package's service does not start in containers, and the tests start the
  # binary themselves on loopback; stop any service the package may have started.
  (command -v service >/dev/null && service prometheus stop) >/dev/null 2>&1 || true
else
  echo "tests need: ${missing[*]}. Install with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
exit 0
