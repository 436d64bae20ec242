package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/proxy"
)

// kelpieConfig runs `kelpie config args...` and returns its output, failing
// t unless it exits 0.
func kelpieConfig(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb strings.Builder
	if code := run(append([]string{"config"}, args...), &out, &errb); code != 0 {
		t.Fatalf("kelpie config %v: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

// TestConfigCommand: `kelpie config -defaults` prints a file that `kelpie
// check` accepts and that loads to exactly the defaults; `-config FILE`
// prints FILE with its defaults filled in, which loads to the same config.
func TestConfigCommand(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		args []string
		want *config.Config
	}{
		"defaults": {[]string{"-defaults"}, config.Defaults()},
		"example":  {[]string{"-config", "../../config.example.yaml"}, nil},
	} {
		out := kelpieConfig(t, c.args...)
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		var checkOut, checkErr strings.Builder
		if code := run([]string{"check", "-config", path}, &checkOut, &checkErr); code != 0 {
			t.Fatalf("%s: kelpie check: exit %d: %s\n%s", name, code, checkErr.String(), out)
		}
		want := c.want
		if want == nil {
			var err error
			if want, err = config.Load("../../config.example.yaml"); err != nil {
				t.Fatal(err)
			}
		}
		got, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := marshal(t, got), marshal(t, want); a != b {
			t.Errorf("%s: printed config loads to\n%s\nwant\n%s", name, a, b)
		}
	}
	// The conflicting defaults of issue 14, settled on the binary's values.
	d := config.Defaults().Limits
	if d.ReadTimeout != proxy.DefaultReadTimeout || d.IdleTimeout != proxy.DefaultIdleTimeout ||
		d.WriteTimeout != proxy.DefaultWriteTimeout || d.MaxConns != proxy.DefaultConcurrency {
		t.Errorf("config limits %+v differ from the proxy's defaults", d)
	}
	if out := kelpieConfig(t, "-defaults"); !strings.Contains(out, "read_timeout: 1m\n") || !strings.Contains(out, "write_timeout: 0s\n") {
		t.Errorf("defaults do not show read_timeout 1m and write_timeout 0s:\n%s", out)
	}
	if admin.DefaultURL != "http://"+config.DefaultAdminListen {
		t.Errorf("admin clients default to %s, admin.listen to %s", admin.DefaultURL, config.DefaultAdminListen)
	}

	for _, args := range [][]string{{}, {"-defaults", "-config", "x.yaml"}, {"-defaults", "extra"}} {
		if code := run(append([]string{"config"}, args...), &strings.Builder{}, &strings.Builder{}); code != 2 {
			t.Errorf("kelpie config %v: exit %d, want 2", args, code)
		}
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("upstreams:\n  - name: a\n    balance: x\n    backends: [{address: \"h:1\"}]\n"), 0o644)
	var errb strings.Builder
	if code := run([]string{"config", "-config", bad}, &strings.Builder{}, &errb); code != 1 || !strings.HasPrefix(errb.String(), bad+":3:") {
		t.Errorf("kelpie config -config bad.yaml: exit %d, %q", code, errb.String())
	}
}

func marshal(t *testing.T, c *config.Config) string {
	t.Helper()
	out, err := config.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
