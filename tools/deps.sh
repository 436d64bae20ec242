#!/usr/bin/env bash
# Installs what kelpie's tests need and the machine lacks:
#   - chromium (Debian package) for the dashboard's browser test;
#   - ip (iproute2) and nft (nftables), Debian packages, for the tests whose
#     backends sit on another host: a network namespace whose link drops
#     packets (black hole, packet loss);
#   - the consul binary, built from tools/consul (cached; ~6 min the first time);
#   - pebble (an ACME test server) and its DNS companion, built from tools/pebble
#     (cached; under a minute).
# `go test -short ./...` (make test-short) needs neither: it skips the tests
# that do. Without -short a missing one fails its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "deps: installing chromium (Debian package)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

missing=""
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
if [ -n "$missing" ]; then
  echo "deps: installing$missing (Debian packages)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

tools/consul/build.sh >/dev/null
tools/pebble/build.sh >/dev/null
