# kelpie: `make test` runs the whole suite on a fresh machine (it installs
# what the tests need first); `make test-short` is the quick tier that needs
# nothing installed; `make bench` runs the side-by-side benchmark.
GO ?= go
# A count, not a duration: a duration -fuzztime can fail with "context deadline
# exceeded" when it expires mid-execution (golang/go#75804, unfixed in Go 1.26).
FUZZTIME ?= 20000x

.PHONY: test test-short deps vet unit allocs fuzz bench build demo image example-images

test: deps vet unit allocs fuzz

# The quick tier, under a minute on a machine without Chromium, Consul or a
# container engine: -short skips only the tests that need one of those, each
# saying which and how to get it. Without -short those tests fail instead,
# so the full run (make test, CI) cannot pass by skipping.
test-short:
	$(GO) test -short -count=1 ./...

# Chromium (dashboard and WebSocket browser tests) from Debian's packages,
# the Consul binary (discovery tests) built from tools/consul, and Pebble
# (ACME tests) built from tools/pebble; all cached.
deps:
	@tools/deps.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

unit:
	KELPIE_CONSUL_BIN="$$(tools/consul/build.sh)" KELPIE_PEBBLE_BIN="$$(tools/pebble/build.sh)" $(GO) test -race -count=1 -timeout 20m ./...

# The zero-allocation guards (AllocsPerRun) build only without -race.
allocs:
	$(GO) test -count=1 -run 'Allocs' ./balancer ./bench

# Every fuzz target, briefly, from its seeds (longer: make fuzz FUZZTIME=2000000x).
fuzz:
	@tools/fuzz.sh $(FUZZTIME)

build:
	$(GO) build -o bin/kelpie ./cmd/kelpie

# kelpie:<version> and kelpie:latest, FROM scratch, from a static binary.
image:
	@tools/image.sh

# The test backend and a Consul agent, FROM scratch, for deploy/compose and
# the container tests (the static Consul build takes minutes the first time).
example-images:
	@tools/example-images.sh

demo:
	$(GO) run ./cmd/kelpie demo

bench:
	@bench/run.sh
