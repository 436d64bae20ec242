#!/usr/bin/env bash
# Runs every Fuzz* target in the module for a short time each (default 5s).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-5s}
n=0
for dir in $(go list -f '{{.Dir}}' ./...); do
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "fuzz: $target in ${dir#$PWD/} for $fuzztime"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir"
    n=$((n+1))
  done
done
echo "fuzz: $n targets passed"
