package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

func startTestDemo(t *testing.T, o demoOptions) (*demo, *testkit.LogBuffer) {
	t.Helper()
	t.Setenv("KELPIE_ADMIN_TOKEN", "")
	if o.Listen == "" {
		o.Listen, o.Admin = "127.0.0.1:0", "127.0.0.1:0"
	}
	if o.Slow == 0 {
		o.Slow = time.Second
	}
	logs, out := &testkit.LogBuffer{}, &testkit.LogBuffer{}
	d, err := startDemo(o, slog.New(slog.NewTextHandler(logs, nil)), out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			t.Logf("demo log:\n%s", logs.String())
		}
	})
	return d, out
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDemoFailoverAndRecovery: the demo serves from its three backends,
// prints where to look, routes around a failing backend without a client
// error, and takes it back once it recovers.
func TestDemoFailoverAndRecovery(t *testing.T) {
	d, _ := startTestDemo(t, demoOptions{})
	seen := map[string]bool{}
	for range 6 {
		code, body := httpGet(t, d.ProxyURL+"/")
		if code != 200 || !strings.HasPrefix(body, "hello from demo-") {
			t.Fatalf("GET / = %d %q", code, body)
		}
		seen[strings.Fields(body)[2]] = true
	}
	if len(seen) != 3 {
		t.Errorf("6 requests reached %v, want all three backends", seen)
	}
	var banner bytes.Buffer
	d.printBanner(&banner)
	for _, want := range []string{d.ProxyURL, d.AdminURL + "/", "kelpie drain -admin " + d.AdminURL + " demo " + d.backends[0].Addr} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, banner.String())
		}
	}
	if code, body := httpGet(t, d.AdminURL+"/"); code != 200 || !strings.Contains(body, "<title>kelpie") {
		t.Errorf("dashboard = %d", code)
	}

	sick := d.backends[2]
	sick.failing.Store(true)
	for i := range 30 {
		if code, body := httpGet(t, d.ProxyURL+"/"); code != 200 || strings.Contains(body, sick.Name) {
			t.Fatalf("request %d while %s fails = %d %q", i, sick.Name, code, body)
		}
	}
	eventually(t, 10*time.Second, sick.Name+" out of rotation", func() bool {
		return !demoBackendState(t, d, sick.Addr).Eligible
	})
	sick.failing.Store(false)
	eventually(t, 20*time.Second, sick.Name+" back in rotation", func() bool {
		return demoBackendState(t, d, sick.Addr).Eligible
	})
}

// TestDemoChaosSchedule: -chaos fails demo-3 and brings it back, and says so.
func TestDemoChaosSchedule(t *testing.T) {
	_, out := startTestDemo(t, demoOptions{Chaos: true, ChaosEvery: 300 * time.Millisecond, ChaosFor: 150 * time.Millisecond})
	eventually(t, 10*time.Second, "a chaos round", func() bool {
		s := out.String()
		return strings.Contains(s, "chaos: demo-3") && strings.Contains(s, "demo-3 recovers")
	})
}

func TestDemoFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{{"extra"}, {"-chaos", "-chaos-every", "1s", "-chaos-for", "2s"}, {"-traffic", "-1"}, {"-nope"}} {
		if code := runDemo(args, &out, &errOut); code != 2 {
			t.Errorf("demo %v = %d, want 2", args, code)
		}
	}
}

func demoBackendState(t *testing.T, d *demo, addr string) backendView {
	t.Helper()
	return findBackend(t, &testApp{app: d.app, AdminURL: d.AdminURL}, "demo", addr)
}
