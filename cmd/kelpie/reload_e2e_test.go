package main

// Reload is all or nothing: a reload that fails at any step of its plan
// leaves the running config fully in place, with no goroutine started.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/proxy"
)

// reloadBase is the running config of the failure tests: upstream a (with
// active probes, so it has a checker goroutine) and b.
func reloadBase(a, b string) string {
	return fmt.Sprintf(`
upstreams:
  - name: a
    slow_start: 0s
    backends:
      - address: %q
    health:
      active: {path: /, interval: 1s, timeout: 500ms}
  - name: b
    backends:
      - address: %q
routes:
  - {path_prefix: /a/, upstream: a}
  - {path_prefix: /b/, upstream: b}
`, a, b)
}

// reloadNext changes every kind of thing a plan touches: upstream a gets
// another balance, weight and backend, b goes, c (probed) and d (the first
// Consul upstream, at consulAddr) arrive, and the routes change; a limit
// that needs a restart changes too.
func reloadNext(a, a2, c, consulAddr string) string {
	return fmt.Sprintf(`
consul:
  address: %q
limits: {max_conns: 500}
upstreams:
  - name: a
    balance: least_conn
    slow_start: 0s
    backends:
      - {address: %q, weight: 5}
      - {address: %q}
    health:
      active: {path: /, interval: 2s, timeout: 500ms}
  - name: c
    backends:
      - address: %q
    health:
      active: {path: /, interval: 1s, timeout: 500ms}
  - name: d
    consul: {service: web}
routes:
  - {path_prefix: /a/, upstream: a}
  - {path_prefix: /c/, upstream: c}
  - {path_prefix: /d/, upstream: d}
`, consulAddr, a, a2, c)
}

// goroutines counts all goroutines and those running one of kelpie's
// background loops (checkers, Consul discovery and its watches).
func goroutines() (all, checkers, consul int) {
	buf := make([]byte, 4<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return runtime.NumGoroutine(),
		strings.Count(stacks, "health.(*Checker).Run("),
		strings.Count(stacks, "discovery.(*Consul).Run(") + strings.Count(stacks, "discovery.(*watch).run(")
}

// settleGoroutines waits until no more goroutines run than base, with
// exactly the given number of checker and Consul loops.
func settleGoroutines(t *testing.T, base, checkers, consul int) {
	t.Helper()
	var all, ch, co int
	// 15s: fasthttp retires a worker goroutine idle for 10s, so one that
	// a request made under load can linger that long.
	eventually(t, 15*time.Second, fmt.Sprintf("goroutines back to %d with %d checkers and %d consul loops", base, checkers, consul), func() bool {
		all, ch, co = goroutines()
		return all <= base && ch == checkers && co == consul
	})
}

func writeConfig(t *testing.T, path, yaml string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReloadFailsWhole: a reload that fails at any step (an invalid file, a
// Consul client that cannot be made, or any plan step made to fail) leaves
// the old config fully running, with its state, and no goroutine behind;
// then the same file, when nothing fails, applies whole.
func TestReloadFailsWhole(t *testing.T) {
	one, two, three, four := startBackend(t, named("one")), startBackend(t, named("two")), startBackend(t, named("three")), startBackend(t, named("four"))
	ta := startApp(t, reloadBase(one.Addr, two.Addr))
	pa, pb := ta.poolByName("a"), ta.poolByName("b")
	b1 := pa.Lookup(one.Addr)
	if _, err := pa.Drain(one.Addr); err != nil {
		t.Fatal(err)
	}
	cfg := ta.cfg
	// The next file's Consul agent never answers: the plan does not
	// contact it, and no test here gets as far as a query.
	next := reloadNext(one.Addr, three.Addr, four.Addr, "127.0.0.1:1")
	eventually(t, 5*time.Second, "checkers of a and b running", func() bool {
		_, checkers, consul := goroutines()
		return checkers == 2 && consul == 0
	})
	failures := 0
	// serving checks what clients see; its requests also warm the
	// connections the goroutine baseline includes.
	serving := func(t *testing.T) {
		t.Helper()
		if code, body := ta.Get(t, "/b/x"); code != 200 || body != "two" {
			t.Fatalf("/b/ = %d %q, want two", code, body)
		}
		for _, p := range []string{"/c/x", "/d/x"} {
			if code, _ := ta.Get(t, p); code != 404 {
				t.Fatalf("%s = %d, want 404: the new route leaked", p, code)
			}
		}
		if got, want := metricValue(t, ta.AdminURL, `kelpie_config_reloads_total{result="error"}`), fmt.Sprint(failures); got != want {
			t.Errorf("reloads error metric = %s, want %s", got, want)
		}
	}
	unchanged := func(t *testing.T) {
		t.Helper()
		ta.mu.Lock()
		n, up, same := len(ta.upstreams), ta.upstreams["a"], ta.cfg == cfg
		ta.mu.Unlock()
		if n != 2 || up == nil || up.pool != pa || ta.poolByName("b") != pb || !same {
			t.Fatalf("upstreams or config changed: %d upstreams, config kept %v", n, same)
		}
		if pa.Algorithm() != balancer.RoundRobin || len(pa.Snapshot().Members) != 1 || pa.Lookup(one.Addr) != b1 || b1.Weight() != 1 {
			t.Fatalf("pool a changed: %s, %d members, weight %d", pa.Algorithm(), len(pa.Snapshot().Members), b1.Weight())
		}
		if b1.Admin() != balancer.AdminDrained {
			t.Fatalf("drain lost: %s", b1.Admin())
		}
		if ta.consul.Load() != nil {
			t.Fatal("a Consul client was installed")
		}
		if len(ta.poolList()) != 2 {
			t.Fatalf("admin API sees %d pools, want 2", len(ta.poolList()))
		}
	}

	fail := func(name string, setup func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			writeConfig(t, ta.Path, next)
			setup(t)
			serving(t)
			base, _, _ := goroutines()
			err := ta.reload()
			ta.failStep = nil
			if err == nil {
				t.Fatal("reload succeeded")
			}
			failures++
			t.Logf("reload error: %v", err)
			unchanged(t)
			serving(t)
			settleGoroutines(t, base, 2, 0)
		})
	}
	fail("invalid file", func(t *testing.T) {
		writeConfig(t, ta.Path, strings.Replace(next, "least_conn", "fastest", 1))
	})
	fail("consul client cannot be made", func(t *testing.T) {
		t.Setenv("CONSUL_CACERT", "/nonexistent/kelpie-test-ca.pem")
	})
	for _, step := range []string{"consul", "upstream a", "upstream c", "watch d", "routes", "set routes"} {
		fail("step "+step, func(t *testing.T) {
			ta.failStep = func(s string) error {
				if s == step {
					return errors.New("injected")
				}
				return nil
			}
		})
	}
	if t.Failed() {
		return
	}
	if logs := ta.Logs.String(); strings.Count(logs, "config reload failed; keeping the running config") != failures ||
		strings.Contains(logs, "upstream=c") {
		t.Errorf("want %d reload failure logs and nothing about upstream c:\n%s", failures, logs)
	}

	// Nothing fails: the same file applies whole, and what stays keeps
	// its state.
	writeConfig(t, ta.Path, next)
	if err := ta.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if code, body := ta.Get(t, "/c/x"); code != 200 || body != "four" {
		t.Fatalf("/c/ = %d %q, want four", code, body)
	}
	if code, _ := ta.Get(t, "/b/x"); code != 404 {
		t.Fatalf("/b/ = %d after b was removed, want 404", code)
	}
	if ta.poolByName("a") != pa || pa.Lookup(one.Addr) != b1 || b1.Weight() != 5 || pa.Algorithm() != balancer.LeastConn {
		t.Fatalf("upstream a after reload: %s, weight %d", pa.Algorithm(), b1.Weight())
	}
	if b1.Admin() != balancer.AdminDrained {
		t.Fatalf("drain lost across reload: %s", b1.Admin())
	}
	if code, body := ta.Get(t, "/a/x"); code != 200 || body != "three" {
		t.Fatalf("/a/ = %d %q, want three (one is drained)", code, body)
	}
	if ta.consul.Load() == nil {
		t.Fatal("no Consul client after a reload that adds the first Consul upstream")
	}
	if ta.cfg.Limits.MaxConns != proxy.DefaultConcurrency || !strings.Contains(ta.Logs.String(), "needs a restart; keeping the running value\" key=limits") {
		t.Errorf("limits.max_conns: running %d, want the old %d kept with a warning", ta.cfg.Limits.MaxConns, proxy.DefaultConcurrency)
	}
	// A checker each for a, c and d; Consul's Run and d's watch loop.
	eventually(t, 5*time.Second, "3 checkers and 2 consul loops", func() bool {
		_, ch, co := goroutines()
		return ch == 3 && co == 2
	})
}

// TestReloadDuringShutdownStartsNothing: a reload that comes after shutdown
// began is refused and starts no checker. (Shutting down at once after
// start also checks that shutdown returns when the proxy's Serve goroutine
// had not yet registered its listener.)
func TestReloadDuringShutdownStartsNothing(t *testing.T) {
	one, two := startBackend(t, named("one")), startBackend(t, named("two"))
	ta := startApp(t, reloadBase(one.Addr, two.Addr))
	if err := ta.shutdown(); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, ta.Path, strings.NewReplacer("name: b", "name: c", "upstream: b}", "upstream: c}").Replace(reloadBase(one.Addr, two.Addr)))
	if err := ta.reload(); !errors.Is(err, errStopping) {
		t.Fatalf("reload after shutdown: %v, want %v", err, errStopping)
	}
	settleGoroutines(t, runtime.NumGoroutine(), 0, 0)
}

// TestNewAppFailsClean: a config whose plan fails at start (a Consul client
// that cannot be made) is an error from newApp, with nothing left running.
func TestNewAppFailsClean(t *testing.T) {
	t.Setenv("CONSUL_CACERT", "/nonexistent/kelpie-test-ca.pem")
	cfg, err := config.Parse("kelpie.yaml", []byte("upstreams: [{name: web, consul: {service: web}}]"))
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	if _, err := newApp(cfg, slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "CA File") {
		t.Fatalf("newApp: %v, want the Consul client's CA error", err)
	}
	settleGoroutines(t, base, 0, 0)
}
