#!/bin/sh
# Builds the consul binary that kelpie's discovery tests run (consul agent
# -dev) from this tools module, verified against the committed go.sum, into
# a cache directory, and prints its path. Does nothing when it is already
# there. The first build takes several minutes (about 6 on 2 cores).
#
#   tools/consul/build.sh            # -> ${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/consul-<version>
#   tools/consul/build.sh OUT        # build to OUT instead
#
# Tests look for the binary at $KELPIE_CONSUL_BIN, else at the default path.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "github.com/hashicorp/consul" { print $2; exit }' "$here/go.mod")
if [ -z "$version" ]; then
	echo "build.sh: github.com/hashicorp/consul not required in $here/go.mod" >&2
	exit 1
fi
version=${version#v}
out=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/consul-$version}

if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT INT TERM
echo "building consul $version into $out (first build takes minutes)" >&2
start=$(date +%s)
# -mod=readonly: go.sum is the source of truth; no GONOSUMDB needed.
# CGO_ENABLED=0: a static binary, so the same build also runs in the
# FROM-scratch image of the container tests (tools/example-images.sh).
(cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -o "$tmp" github.com/hashicorp/consul)
mv "$tmp" "$out"
echo "built consul $version in $(( $(date +%s) - start ))s" >&2
echo "$out"
