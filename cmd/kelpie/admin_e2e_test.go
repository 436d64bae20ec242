package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/admin"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

const e2eToken = "e2e-admin-token"

// adminConfig is one upstream over addrs, with the admin token read from
// KELPIE_E2E_TOKEN and no active probing (so only the drain moves things).
func adminConfig(addrs ...string) string {
	return `admin:
  token_env: KELPIE_E2E_TOKEN
upstreams:
  - name: web
    balance: round_robin
    slow_start: 0s
    backends:
` + yamlBackends(addrs...) + `    retries:
      attempts: 1
`
}

// seqBackend is a backend that remembers the highest X-Seq header it saw
// and parks GET /slow until released.
type seqBackend struct {
	*backend
	name    string
	maxSeq  atomic.Int64
	fast    atomic.Int64
	slowHit chan string   // receives name when /slow arrives
	release chan struct{} // closing it ends every parked /slow
}

func startSeqBackend(t *testing.T, name string, slowHit chan string, release chan struct{}) *seqBackend {
	sb := &seqBackend{name: name, slowHit: slowHit, release: release}
	sb.backend = startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			sb.slowHit <- sb.name
			<-sb.release
			ctx.WriteString("slow " + sb.name)
			return
		}
		seq, _ := strconv.ParseInt(string(ctx.Request.Header.Peek("X-Seq")), 10, 64)
		for {
			cur := sb.maxSeq.Load()
			if seq <= cur || sb.maxSeq.CompareAndSwap(cur, seq) {
				break
			}
		}
		sb.fast.Add(1)
		ctx.WriteString(sb.name)
	})
	return sb
}

// TestDrainUnderLoad: with a long request in flight on a backend and steady
// load on the pool, a drain fails no request, the drained backend receives
// no request issued after the 200 reply, the long request completes, and the
// backend reads "drained" once it has.
func TestDrainUnderLoad(t *testing.T) {
	t.Setenv("KELPIE_E2E_TOKEN", e2eToken)
	slowHit, release := make(chan string, 2), make(chan struct{})
	a := startSeqBackend(t, "a", slowHit, release)
	b := startSeqBackend(t, "b", slowHit, release)
	byName := map[string]*seqBackend{"a": a, "b": b}
	ta := startApp(t, adminConfig(a.Addr, b.Addr))
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	// The long request; whichever backend it lands on is the one to drain.
	slowDone := make(chan string, 1)
	go func() {
		code, body := ta.Get(t, "/slow")
		slowDone <- fmt.Sprint(code, " ", body)
	}()
	var victim, other *seqBackend
	select {
	case name := <-slowHit:
		victim = byName[name]
	case <-time.After(10 * time.Second):
		t.Fatal("the long request reached no backend")
	}
	for _, sb := range byName {
		if sb != victim {
			other = sb
		}
	}

	// Steady load from 4 clients, each request numbered when it is issued.
	var seq, total, failed atomic.Int64
	var failures sync.Map
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &fasthttp.HostClient{Addr: ta.ProxyAddr, MaxConns: 16}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for ctx.Err() == nil {
				req.SetRequestURI("http://" + ta.ProxyAddr + "/fast")
				req.Header.Set("X-Seq", strconv.FormatInt(seq.Add(1), 10))
				err := client.DoTimeout(req, resp, 10*time.Second)
				total.Add(1)
				if err != nil || resp.StatusCode() != 200 {
					failed.Add(1)
					failures.Store(fmt.Sprint(err, resp.StatusCode()), true)
				}
			}
		}()
	}
	defer func() { stopLoad(); wg.Wait() }()
	eventually(t, 10*time.Second, "load on the victim", func() bool { return victim.fast.Load() >= 50 })

	c := &admin.Client{BaseURL: ta.AdminURL, Token: e2eToken}
	start := time.Now()
	got, _, err := c.Drain(context.Background(), "web", victim.Addr)
	ack := time.Since(start)
	seqAtReply := seq.Load()
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	if got.Admin != "draining" || got.Eligible || got.InFlight < 1 {
		t.Fatalf("drain reply = %+v, want draining, not eligible, the long request in flight", got)
	}
	t.Logf("drain acknowledged in %s with %d in flight", ack, got.InFlight)

	// Keep the load going well past the drain, then look at what reached the
	// victim.
	after := total.Load()
	eventually(t, 20*time.Second, "load after the drain", func() bool { return total.Load() >= after+400 })
	if max := victim.maxSeq.Load(); max > seqAtReply {
		t.Errorf("the drained backend received request #%d, issued after the drain reply (last issued before: #%d)", max, seqAtReply)
	}
	if v := findBackend(t, ta, "web", victim.Addr); v.Admin != "draining" || v.InFlight != 1 {
		t.Errorf("while the long request runs: admin=%s in_flight=%d, want draining 1", v.Admin, v.InFlight)
	}
	// Idempotent: a second drain changes nothing.
	if again, _, err := c.Drain(context.Background(), "web", victim.Addr); err != nil || again.Admin != "draining" {
		t.Errorf("second drain = %+v, %v", again, err)
	}

	close(release)
	select {
	case res := <-slowDone:
		if res != "200 slow "+victim.name {
			t.Errorf("long request = %q, want 200 from %s", res, victim.name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long request did not finish")
	}
	eventually(t, 5*time.Second, "drained", func() bool {
		v := findBackend(t, ta, "web", victim.Addr)
		return v.Admin == "drained" && v.InFlight == 0
	})
	stopLoad()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		var kinds []string
		failures.Range(func(k, _ any) bool { kinds = append(kinds, k.(string)); return true })
		t.Errorf("%d of %d requests failed during the drain: %v", n, total.Load(), kinds)
	}
	t.Logf("%d requests, %d on %s after the drain", total.Load(), other.fast.Load(), other.name)

	// Back into rotation.
	if r, _, err := c.Ready(context.Background(), "web", victim.Addr); err != nil || r.Admin != "ready" || !r.Eligible {
		t.Fatalf("ready = %+v, %v", r, err)
	}
	before := victim.fast.Load()
	for range 10 {
		if code, _ := ta.Get(t, "/fast"); code != 200 {
			t.Fatalf("after ready: %d", code)
		}
	}
	if victim.fast.Load() <= before {
		t.Error("the readied backend gets no traffic")
	}
}

type backendView = admin.Backend

func findBackend(t *testing.T, ta *testApp, upstream, addr string) backendView {
	t.Helper()
	resp, _, err := (&admin.Client{BaseURL: ta.AdminURL}).Upstreams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range resp.Upstreams {
		for _, b := range u.Backends {
			if u.Name == upstream && b.Address == addr {
				return b
			}
		}
	}
	t.Fatalf("no backend %s in %s", addr, upstream)
	return backendView{}
}

// runCLI runs one CLI subcommand in-process.
func runCLI(f func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := f(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCLIClients(t *testing.T) {
	t.Setenv("KELPIE_E2E_TOKEN", e2eToken)
	t.Setenv("KELPIE_ADMIN_TOKEN", "")
	one, two := startBackend(t, named("one")), startBackend(t, named("two"))
	ta := startApp(t, adminConfig(one.Addr, two.Addr))
	backends := func(a []string, o, e *bytes.Buffer) int { return runBackends(a, o, e) }
	drain := func(a []string, o, e *bytes.Buffer) int { return runDrain(a, o, e) }
	ready := func(a []string, o, e *bytes.Buffer) int { return runReady(a, o, e) }

	code, out, errOut := runCLI(backends, "-admin", ta.AdminURL)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "UPSTREAM") {
		t.Fatalf("backends = %d\n%s%s", code, out, errOut)
	}
	// Aligned: every column starts at the same offset on every line.
	col := strings.Index(lines[0], "ELIGIBLE")
	for _, l := range lines[1:] {
		if len(l) < col || l[col-2:col] != "  " || l[col] == ' ' {
			t.Errorf("misaligned table:\n%s", out)
		}
	}
	if !strings.Contains(out, one.Addr) || !strings.Contains(out, two.Addr) {
		t.Errorf("table lacks the backends:\n%s", out)
	}

	code, out, _ = runCLI(backends, "-admin", ta.AdminURL, "-json")
	var resp admin.UpstreamsResponse
	if code != 0 || json.Unmarshal([]byte(out), &resp) != nil || len(resp.Upstreams) != 1 {
		t.Fatalf("backends -json = %d %q", code, out)
	}

	// Mutations need the token: from the flag or from KELPIE_ADMIN_TOKEN.
	code, _, errOut = runCLI(drain, "-admin", ta.AdminURL, "web", one.Addr)
	if code != 1 || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "KELPIE_ADMIN_TOKEN") {
		t.Errorf("drain without token = %d %q, want 1 with a 401 and a hint", code, errOut)
	}
	code, out, errOut = runCLI(drain, "-admin", ta.AdminURL, "-token", e2eToken, "web", one.Addr)
	if code != 0 || !strings.Contains(out, "admin=drained") {
		t.Errorf("drain = %d %q %q", code, out, errOut)
	}
	t.Setenv("KELPIE_ADMIN_TOKEN", e2eToken)
	code, out, _ = runCLI(drain, "-admin", strings.TrimPrefix(ta.AdminURL, "http://"), "-json", "web", one.Addr)
	var b admin.Backend
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.Admin != "drained" {
		t.Errorf("drain -json (token from env, URL without scheme) = %d %q", code, out)
	}
	code, out, _ = runCLI(ready, "-admin", ta.AdminURL, "web", one.Addr)
	if code != 0 || !strings.Contains(out, "admin=ready eligible=yes") {
		t.Errorf("ready = %d %q", code, out)
	}

	for _, c := range []struct {
		name string
		run  func([]string, *bytes.Buffer, *bytes.Buffer) int
		args []string
		code int
		want string
	}{
		{"unknown backend", drain, []string{"-admin", ta.AdminURL, "web", "127.0.0.1:1"}, 1, "404"},
		{"unknown upstream", ready, []string{"-admin", ta.AdminURL, "nope", one.Addr}, 1, "unknown upstream"},
		{"missing args", drain, []string{"-admin", ta.AdminURL, "web"}, 2, "usage"},
		{"flags after args", drain, []string{"web", one.Addr, "-json"}, 2, "usage"},
		{"extra args", backends, []string{"x"}, 2, "usage"},
		{"bad flag", backends, []string{"-nope"}, 2, "-nope"},
		{"nothing listening", backends, []string{"-admin", "http://" + testkit.FreeAddr(t)}, 1, "is kelpie running"},
		{"bad URL", backends, []string{"-admin", "ftp://x"}, 1, "admin URL"},
	} {
		code, out, errOut := runCLI(c.run, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, stderr %q (stdout %q); want exit %d mentioning %q", c.name, code, errOut, out, c.code, c.want)
		}
	}
}

// TestDrainSurvivesRestart: with admin.state_file, a drained backend is
// still drained in the next process, before it serves a request.
func TestDrainSurvivesRestart(t *testing.T) {
	t.Setenv("KELPIE_E2E_TOKEN", e2eToken)
	one, two := startBackend(t, named("one")), startBackend(t, named("two"))
	state := filepath.Join(t.TempDir(), "drained.json")
	cfg := strings.Replace(adminConfig(one.Addr, two.Addr), "admin:\n", fmt.Sprintf("admin:\n  state_file: %q\n", state), 1)
	first := startApp(t, cfg)
	c := &admin.Client{BaseURL: first.AdminURL, Token: e2eToken}
	if _, _, err := c.Drain(context.Background(), "web", one.Addr); err != nil {
		t.Fatal(err)
	}
	if err := first.shutdown(); err != nil {
		t.Fatal(err)
	}

	second := startApp(t, cfg)
	if b := findBackend(t, second, "web", one.Addr); b.Admin != "drained" || b.Eligible {
		t.Fatalf("after restart: %+v, want drained", b)
	}
	for range 10 {
		if code, body := second.Get(t, "/"); code != 200 || body != "two" {
			t.Fatalf("after restart: %d %q, want 200 from two", code, body)
		}
	}
	if one.Hits() != 0 {
		t.Errorf("the drained backend got %d requests after the restart", one.Hits())
	}
}

// TestMetricsThroughTheProxy: requests through the proxy show up in
// /metrics with the contract's names and labels.
func TestMetricsThroughTheProxy(t *testing.T) {
	one := startBackend(t, named("one"))
	ta := startApp(t, adminConfig(one.Addr))
	for range 5 {
		if code, _ := ta.Get(t, "/"); code != 200 {
			t.Fatalf("GET = %d", code)
		}
	}
	for series, want := range map[string]string{
		fmt.Sprintf(`kelpie_requests_total{backend=%q,code="200",upstream="web"}`, one.Addr): "5",
		fmt.Sprintf(`kelpie_backend_eligible{backend=%q,upstream="web"}`, one.Addr):          "1",
		fmt.Sprintf(`kelpie_backend_in_flight{backend=%q,upstream="web"}`, one.Addr):         "0",
		`kelpie_request_duration_seconds_count{upstream="web"}`:                              "5",
		`kelpie_retries_total{upstream="web"}`:                                               "0",
		`kelpie_config_reloads_total{result="success"}`:                                      "0",
	} {
		if got := metricValue(t, ta.AdminURL, series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
}
