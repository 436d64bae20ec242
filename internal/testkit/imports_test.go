package testkit

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNotInProductBinaries: no command kelpie builds links the kit (only
// tests and test-helper packages such as discovery/consultest import it).
func TestNotInProductBinaries(t *testing.T) {
	const kit = "github.com/kelpie-lb/kelpie/internal/testkit"
	out, err := exec.Command("go", "list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "github.com/kelpie-lb/kelpie/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	cmds := strings.Fields(string(out))
	if len(cmds) == 0 {
		t.Fatal("go list found no command package")
	}
	out, err = exec.Command("go", append([]string{"list", "-deps"}, cmds...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", cmds, err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == kit || strings.HasPrefix(p, kit+"/") {
			t.Fatalf("%s is linked into a command (%v); import it from _test.go files only", p, cmds)
		}
	}
	t.Logf("%d commands, none links the kit", len(cmds))
}
