#!/bin/sh
# Builds the images deploy/compose and the container tests run besides
# kelpie's own: the test backend (bench/cmd/backend) and a Consul agent,
# both FROM scratch from static binaries built here. Prints the two names.
#
#   tools/example-images.sh     # kelpie-example-backend:latest, kelpie-example-consul:latest
#   BACKEND_IMAGE=b CONSUL_IMAGE=c tools/example-images.sh
#   tools/example-images.sh backend     # only one of them (also: consul)
#
# The static Consul binary is cached next to tools/consul/build.sh's (the
# first build takes several minutes).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
backend_image=${BACKEND_IMAGE:-kelpie-example-backend:latest}
consul_image=${CONSUL_IMAGE:-kelpie-example-consul:latest}

[ $# -gt 0 ] || set -- backend consul

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT INT TERM

for what in "$@"; do
	mkdir "$ctx/$what"
	case $what in
	backend)
		(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/backend/backend" ./bench/cmd/backend)
		docker build -q -f "$root/deploy/images/backend.Dockerfile" -t "$backend_image" "$ctx/backend" >/dev/null
		echo "$backend_image"
		;;
	consul)
		# CGO_ENABLED=0: the agent must run on scratch, with no libc.
		version=$(awk '$1 == "github.com/hashicorp/consul" { sub(/^v/, "", $2); print $2; exit }' "$root/tools/consul/go.mod")
		consul=$(CGO_ENABLED=0 "$root/tools/consul/build.sh" "${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/consul-$version-static")
		cp "$consul" "$ctx/consul/consul"
		docker build -q -f "$root/deploy/images/consul.Dockerfile" -t "$consul_image" "$ctx/consul" >/dev/null
		echo "$consul_image"
		;;
	*)
		echo "example-images.sh: unknown image $what (backend, consul)" >&2
		exit 2
		;;
	esac
done
