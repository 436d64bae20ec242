#!/usr/bin/env bash
# Runs every Fuzz* target in the module for a short while each: 20000
# executions by default (a count; a duration such as 5s can fail spuriously with
# "context deadline exceeded" as it expires, golang/go#75804, unfixed in Go 1.26).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-20000x}
n=0
for dir in $(go list -f '{{.Dir}}' ./...); do
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "fuzz: $target in ${dir#$PWD/} for $fuzztime"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir"
    n=$((n+1))
  done
done
echo "fuzz: $n targets passed"
