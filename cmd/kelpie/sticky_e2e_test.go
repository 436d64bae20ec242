package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// stickyGet sends one request through kelpie with optional tenant header
// and sticky cookie; it returns the answering backend and the new sticky
// cookie value ("" when none was set).
func stickyGet(t *testing.T, ta *testApp, tenant, cookie string) (who, set string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + ta.ProxyAddr + "/")
	if tenant != "" {
		req.Header.Set("X-Tenant", tenant)
	}
	if cookie != "" {
		req.Header.SetCookie("lb", cookie)
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey("lb")
	if resp.Header.Cookie(c) {
		set = string(c.Value())
		if !c.HTTPOnly() || c.SameSite() != fasthttp.CookieSameSiteLaxMode {
			t.Errorf("sticky cookie attributes: %s", c.String())
		}
	}
	return string(resp.Body()), set
}

// TestHashAndStickyEndToEnd runs kelpie from a config file with balance:
// hash on a tenant header and sticky cookies over real loopback backends:
// tenants keep their backend, sticky clients keep theirs across a config
// reload (the cookie key is the process's), and a drain (drain_grace 0s)
// moves them at once with a new cookie.
func TestHashAndStickyEndToEnd(t *testing.T) {
	var addrs []string
	for _, n := range []string{"one", "two", "three"} {
		addrs = append(addrs, startBackend(t, named(n)).Addr)
	}
	cfg := func(retries int) string {
		return fmt.Sprintf(`upstreams:
  - name: web
    balance: hash
    hash_on: "header:X-Tenant"
    hash_balance_factor: 150
    retries: {attempts: %d}
    sticky: {cookie: lb, drain_grace: 0s}
    backends:
%s`, retries, yamlBackends(addrs...))
	}
	ta := startApp(t, cfg(1))

	seen := map[string]bool{}
	for i := range 20 {
		tenant := fmt.Sprintf("tenant-%d", i)
		first, _ := stickyGet(t, ta, tenant, "")
		for range 3 {
			if got, _ := stickyGet(t, ta, tenant, ""); got != first {
				t.Fatalf("%s went to %s, then %s", tenant, first, got)
			}
		}
		seen[first] = true
	}
	if len(seen) != 3 {
		t.Errorf("20 tenants reached %d of 3 backends", len(seen))
	}

	if got, want := ta.Upstreams(t).Upstreams[0].Policy, "hash header:X-Tenant, bound 150%, sticky cookie lb"; got != want {
		t.Errorf("admin API policy %q, want %q", got, want)
	}

	who, cookie := stickyGet(t, ta, "", "")
	if cookie == "" {
		t.Fatal("no sticky cookie set")
	}
	writeConfig(t, ta.Path, cfg(2))
	if err := ta.reload(); err != nil {
		t.Fatal(err)
	}
	for range 6 { // without the cookie these would round-robin
		if got, set := stickyGet(t, ta, "", cookie); got != who || set != "" {
			t.Fatalf("after reload: pinned to %s, answered by %s, set %q", who, got, set)
		}
	}

	var addr string
	for i, n := range []string{"one", "two", "three"} {
		if n == who {
			addr = addrs[i]
		}
	}
	resp, err := http.Post(ta.AdminURL+"/api/v1/upstreams/web/backends/"+addr+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("drain: %s", resp.Status)
	}
	got, set := stickyGet(t, ta, "", cookie)
	if got == who || set == "" || set == cookie {
		t.Fatalf("drained with grace 0: answered by %s (drained %s), cookie %q", got, who, set)
	}
	if again, s := stickyGet(t, ta, "", set); again != got || s != "" {
		t.Fatalf("re-pinned to %s: answered by %s, set %q", got, again, s)
	}
}
