package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExecCheckE2E: a script check decides per backend from flag files:
// exit 2 takes a backend out, exit 1 keeps it eligible but degraded at a
// quarter of its weight with the script's output in the API, exit 0 puts it
// back.
func TestExecCheckE2E(t *testing.T) {
	dir := t.TempDir()
	check := filepath.Join(dir, "check.sh")
	os.WriteFile(check, []byte(`#!/bin/sh
[ -e "`+dir+`/down-$KELPIE_BACKEND_PORT" ] && { echo "down by flag"; exit 2; }
[ -e "`+dir+`/warn-$KELPIE_BACKEND_PORT" ] && { echo "warn for $KELPIE_UPSTREAM"; exit 1; }
echo ok
`), 0o755)
	a, b := startBackend(t, named("a")), startBackend(t, named("b"))
	ta := startApp(t, fmt.Sprintf(`allow_exec_checks: true
upstreams:
  - name: web
    slow_start: 0s
    backends:
%s    health:
      active: {type: exec, command: [%q], interval: 100ms, timeout: 100ms, rise: 1, fall: 1}
`, yamlBackends(a.Addr, b.Addr), check))
	waitHealthy(t, ta, a.Addr, b.Addr)
	port := a.Addr[strings.LastIndex(a.Addr, ":")+1:]

	os.WriteFile(filepath.Join(dir, "down-"+port), nil, 0o644)
	ta.waitEligible(t, a.Addr, false, 5*time.Second)
	if v := findBackend(t, ta, "web", a.Addr); v.Health != "unhealthy" || v.CheckOutput != "down by flag\n" {
		t.Fatalf("down: health %s output %q", v.Health, v.CheckOutput)
	}
	os.Remove(filepath.Join(dir, "down-"+port))
	os.WriteFile(filepath.Join(dir, "warn-"+port), nil, 0o644)
	eventually(t, 5*time.Second, "a degraded", func() bool {
		v := findBackend(t, ta, "web", a.Addr)
		return v.Health == "degraded" && v.Eligible && v.CheckOutput == "warn for web\n"
	})
	hits := map[string]int{}
	for range 200 {
		_, body := ta.Get(t, "/x")
		hits[body]++
	}
	// Weights 1 and 1/4: a gets a fifth of the traffic.
	if hits["a"] < 20 || hits["a"] > 70 || hits["a"]+hits["b"] != 200 {
		t.Fatalf("hits %v, want about 40 of 200 on the degraded backend", hits)
	}
	os.Remove(filepath.Join(dir, "warn-"+port))
	eventually(t, 5*time.Second, "a healthy again", func() bool { return findBackend(t, ta, "web", a.Addr).Health == "healthy" })
}

func TestExecCheckConfigErrors(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.txt")
	os.WriteFile(plain, []byte("not a program"), 0o644)
	for _, tc := range []struct{ yaml, want string }{
		{"upstreams:\n  - name: web\n    backends: [{address: \"127.0.0.1:9001\"}]\n    health:\n      active:\n        type: exec\n        command: [/bin/true]\n",
			`:6: upstream "web": health.active.type exec runs programs: it needs allow_exec_checks: true at the top level`},
		{"allow_exec_checks: true\nupstreams:\n  - name: web\n    backends: [{address: \"127.0.0.1:9001\"}]\n    health:\n      active:\n        type: exec\n        command: [" + plain + "]\n",
			`:8: upstream "web": health.active.command "` + plain + `": not an executable file`},
		{"allow_exec_checks: true\nupstreams:\n  - name: web\n    backends: [{address: \"127.0.0.1:9001\"}]\n    health:\n      active:\n        type: exec\n        command: [no-such-check-program]\n",
			`:8: upstream "web": health.active.command "no-such-check-program": not found in`},
		{"allow_exec_checks: true\nupstreams:\n  - name: web\n    backends: [{address: \"127.0.0.1:9001\"}]\n    health:\n      active:\n        type: exec\n",
			`:7: upstream "web": health.active.type exec needs command: [program, args...]`},
	} {
		path := filepath.Join(t.TempDir(), "exec.yaml")
		os.WriteFile(path, []byte(tc.yaml), 0o644)
		var out, errb strings.Builder
		if code := run([]string{"check", "-config", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), path+tc.want) {
			t.Errorf("exit %d: %q, want %q", code, errb.String(), path+tc.want)
		}
	}
}
