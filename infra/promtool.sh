#!/usr/bin/env bash
# Runs promtool (Prometheus' rule checker) with the given arguments. Uses a promtool on PATH
# when there is one; otherwise takes it from Debian's `prometheus` package, downloaded once
# with `apt-get download` (no install, no root needed once the package lists are there) and
# unpacked into the cache folder of the local stack (PGBRIDGE_CACHE_DIR, ~/.cache/pgbridge).
#   bash infra/promtool.sh check rules deploy/monitoring/pgbridge-alerts.yaml
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then exec promtool "$@"; fi
cache="${PGBRIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pgbridge}/promtool"
bin="$cache/usr/bin/promtool"
if [ ! -x "$bin" ]; then
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "promtool.sh: no promtool on PATH and no apt-get/dpkg-deb to fetch Debian's prometheus package; install promtool" >&2
    exit 3
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download needs the package lists; a machine where they were never fetched has none.
  if ! (cd "$tmp" && apt-get download prometheus >"$tmp/apt.log" 2>&1); then
    if [ "$(id -u)" = 0 ]; then
      echo "promtool.sh: apt-get download failed; updating the package lists once" >&2
      apt-get update -qq >&2
      (cd "$tmp" && apt-get download prometheus >"$tmp/apt.log" 2>&1) || { cat "$tmp/apt.log" >&2; exit 3; }
    else
      cat "$tmp/apt.log" >&2
      echo "promtool.sh: cannot download Debian's prometheus package (run apt-get update as root, or install promtool)" >&2
      exit 3
    fi
  fi
  mkdir -p "$cache.new"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$cache.new"
  test -x "$cache.new/usr/bin/promtool" || { echo "promtool.sh: the prometheus package has no usr/bin/promtool" >&2; exit 3; }
  rm -rf "$cache" && mv "$cache.new" "$cache"
  echo "promtool.sh: $("$bin" --version 2>&1 | head -1) from $(basename "$tmp"/prometheus_*.deb)" >&2
  rm -rf "$tmp"
  trap - EXIT
fi
exec "$bin" "$@"
