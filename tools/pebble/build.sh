#!/bin/sh
# Builds the pebble binary (Let's Encrypt's ACME test server) that kelpie's
# ACME tests run on loopback, from this tools module, verified against the committed go.sum, into
# a cache directory, and prints its path. Does nothing when it is already
# there. The first build takes about a minute.
#
#   tools/pebble/build.sh            # -> ${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/pebble-<version>
#                                    #    and pebble-challtestsrv-<version> beside it
#   tools/pebble/build.sh OUT        # build to OUT instead
#
# Tests look for the binary at $KELPIE_PEBBLE_BIN, else at the default path.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "github.com/letsencrypt/pebble/v2" { print $2; exit }' "$here/go.mod")
if [ -z "$version" ]; then
	echo "build.sh: github.com/letsencrypt/pebble/v2 not required in $here/go.mod" >&2
	exit 1
fi
version=${version#v}
out=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/pebble-$version}

if [ -x "$out" ] && [ -x "$(dirname "$out")/pebble-challtestsrv-$version" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp" "$tmp.dns"' EXIT INT TERM
echo "building pebble $version into $out (first build takes minutes)" >&2
start=$(date +%s)
# -mod=readonly: go.sum is the source of truth; no GONOSUMDB needed.
(cd "$here" && GOFLAGS=-mod=readonly go build -o "$tmp" github.com/letsencrypt/pebble/v2/cmd/pebble)
# Its companion DNS server: the ACME test resolves its domain through it.
(cd "$here" && GOFLAGS=-mod=readonly go build -o "$tmp.dns" github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv)
mv "$tmp.dns" "$(dirname "$out")/pebble-challtestsrv-$version"
mv "$tmp" "$out"
echo "built pebble $version in $(( $(date +%s) - start ))s" >&2
echo "$out"
