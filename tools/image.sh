#!/bin/sh
# Builds kelpie's container image from a static binary built here: no
# registry, no base image (FROM scratch). Prints the image name.
#
#   tools/image.sh                          # kelpie:<version> and kelpie:latest
#   KELPIE_IMAGE=kelpie-test-1 tools/image.sh   # one name only (tests)
#
# CA certificates come from this machine (Debian's ca-certificates package).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
version=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
certs=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
if [ ! -r "$certs" ]; then
	echo "image.sh: $certs not found; install the ca-certificates package or set CA_CERTS" >&2
	exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT INT TERM

# build runs docker build quietly; its log (the legacy builder warns on
# every build) is shown only when it fails.
build() {
	if ! docker build "$@" >"$ctx/build.log" 2>&1; then
		cat "$ctx/build.log" >&2
		exit 1
	fi
}
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.buildVersion=$version" -o "$ctx/kelpie" ./cmd/kelpie)
cp "$certs" "$ctx/ca-certificates.crt"

if [ -n "${KELPIE_IMAGE:-}" ]; then
	set -- -t "$KELPIE_IMAGE"
	name=$KELPIE_IMAGE
else
	set -- -t "kelpie:$version" -t kelpie:latest
	name="kelpie:$version"
fi
build -q --build-arg "VERSION=$version" -f "$root/Dockerfile" "$@" "$ctx"
echo "$name"
