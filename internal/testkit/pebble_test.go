package testkit

import (
	"os"
	"strings"
	"testing"
)

// TestPebbleVersionMatchesTools: the binary tests look for is the one
// tools/pebble/build.sh builds.
func TestPebbleVersionMatchesTools(t *testing.T) {
	b, err := os.ReadFile("../../tools/pebble/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "github.com/letsencrypt/pebble/v2" {
			if f[1] != "v"+PebbleVersion {
				t.Fatalf("tools/pebble/go.mod has %s, PebbleVersion is %s", f[1], PebbleVersion)
			}
			return
		}
	}
	t.Fatal("tools/pebble/go.mod does not require github.com/letsencrypt/pebble/v2")
}
