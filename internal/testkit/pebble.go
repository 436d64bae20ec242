package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// PebbleVersion is the Pebble (Let's Encrypt's ACME test server) that
// tools/pebble/build.sh builds; keep it equal to tools/pebble/go.mod's.
const PebbleVersion = "2.10.3"

// PebbleBinary returns the pebble binary's path: $KELPIE_PEBBLE_BIN, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/pebble-<PebbleVersion>, where
// tools/pebble/build.sh puts it. Without one the test is Missing.
func PebbleBinary(t testing.TB) string {
	t.Helper()
	path := os.Getenv("KELPIE_PEBBLE_BIN")
	if path == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				Missing(t, "a pebble binary", "no KELPIE_PEBBLE_BIN and no home directory for the default path")
				return ""
			}
			cache = filepath.Join(home, ".cache")
		}
		path = filepath.Join(cache, "kelpie", "bin", "pebble-"+PebbleVersion)
	}
	if _, err := os.Stat(path); err != nil {
		Missing(t, "a pebble binary", fmt.Sprintf("%v: run tools/pebble/build.sh or set KELPIE_PEBBLE_BIN", err))
		return ""
	}
	return path
}
