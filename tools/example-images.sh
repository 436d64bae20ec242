#!/bin/sh
# Builds the images deploy/compose and the container tests run besides
# kelpie's own: the test backend (bench/cmd/backend) and a Consul agent,
# both FROM scratch from static binaries built here. Prints the two names.
#
#   tools/example-images.sh     # kelpie-example-backend:latest, kelpie-example-consul:latest
#   BACKEND_IMAGE=b CONSUL_IMAGE=c tools/example-images.sh
#   tools/example-images.sh backend     # only one of them (also: consul)
#
# Consul is tools/consul/build.sh's static build (cached; the first build
# takes several minutes).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
backend_image=${BACKEND_IMAGE:-kelpie-example-backend:latest}
consul_image=${CONSUL_IMAGE:-kelpie-example-consul:latest}

[ $# -gt 0 ] || set -- backend consul

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

for what in "$@"; do
	mkdir "$ctx/$what"
	case $what in
	backend)
		(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/backend/backend" ./bench/cmd/backend)
		build -q -f "$root/deploy/images/backend.Dockerfile" -t "$backend_image" "$ctx/backend"
		echo "$backend_image"
		;;
	consul)
		# The agent runs on scratch: it must be static. build.sh builds it
		# so; a cache from before it did holds a cgo build, so build a
		# static one next to it.
		consul=$("$root/tools/consul/build.sh")
		if ! go version -m "$consul" | grep -q 'CGO_ENABLED=0'; then
			consul=$("$root/tools/consul/build.sh" "$consul-static")
		fi
		cp "$consul" "$ctx/consul/consul"
		build -q -f "$root/deploy/images/consul.Dockerfile" -t "$consul_image" "$ctx/consul"
		echo "$consul_image"
		;;
	*)
		echo "example-images.sh: unknown image $what (backend, consul)" >&2
		exit 2
		;;
	esac
done
