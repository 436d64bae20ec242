package admin

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

const testToken = "s3cret-canary-token"

func TestListUpstreamsShape(t *testing.T) {
	web := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	api := newPool(t, "api", "[::1]:7000")
	srv := serve(t, Options{}, web, api)

	b2 := web.Lookup("127.0.0.1:9002")
	web.Update(b2, "test", func(s *balancer.State) { s.Health, s.Breaker = balancer.HealthUnhealthy, balancer.BreakerHalfOpen })

	r := call(t, "GET", srv.URL+"/api/v1/upstreams", "", "")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET = %d %q", r.code, r.header.Get("Content-Type"))
	}
	// The contract's keys, checked on the raw JSON so a renamed tag fails.
	var raw struct {
		Upstreams []struct {
			Name, Balance string
			Backends      []map[string]any
		}
	}
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Upstreams) != 2 || raw.Upstreams[0].Name != "web" || raw.Upstreams[0].Balance != "round_robin" {
		t.Fatalf("upstreams = %+v", raw.Upstreams)
	}
	want := []string{"address", "weight", "backup", "source", "health", "ejected", "breaker", "admin",
		"eligible", "in_flight", "requests", "failures"}
	for _, key := range want {
		if _, ok := raw.Upstreams[0].Backends[0][key]; !ok {
			t.Errorf("backend JSON lacks %q: %v", key, raw.Upstreams[0].Backends[0])
		}
	}

	resp := upstreams(t, srv.URL)
	got1 := findIn(t, resp, "web", "127.0.0.1:9001")
	wantB1 := Backend{Address: "127.0.0.1:9001", Weight: 1, Source: "static", Health: "unknown", Breaker: "closed",
		Admin: "ready", Eligible: true, Down: []string{}, SuccessRate: 1}
	if !equalBackend(got1, wantB1) {
		t.Errorf("backend 1 = %+v, want %+v", got1, wantB1)
	}
	got2 := findIn(t, resp, "web", "127.0.0.1:9002")
	// Taken out by active probing with no failure seen first: detected
	// after 0ms.
	zero := int64(0)
	wantB2 := Backend{Address: "127.0.0.1:9002", Weight: 1, Source: "static", Health: "unhealthy", Breaker: "half-open",
		Admin: "ready", Eligible: false, Down: []string{"unhealthy"}, SuccessRate: 1, LastDetectionMs: &zero, LastDetectedBy: "active"}
	if !equalBackend(got2, wantB2) {
		t.Errorf("backend 2 = %+v, want %+v", got2, wantB2)
	}
	if u := resp.Upstreams[0]; u.Tier != "primary" || u.EligibleBackends != 1 {
		t.Errorf("web tier=%s eligible_backends=%d, want primary 1", u.Tier, u.EligibleBackends)
	}
	findIn(t, resp, "api", "[::1]:7000")
}

func equalBackend(a, b Backend) bool {
	return slices.Equal(a.Down, b.Down) && reflect.DeepEqual(a, b)
}

// Every mutating route refuses a missing or wrong token with a JSON 401 and
// accepts the right one.
func TestMutatingRoutesNeedToken(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001")
	srv := serve(t, Options{Token: testToken}, p)
	base := srv.URL + "/api/v1/upstreams/web/backends/127.0.0.1:9001"
	routes := []struct{ method, path, body string }{
		{"POST", "/drain", ""},
		{"POST", "/ready", ""},
		{"PUT", "/weight", `{"weight":3}`},
	}
	for _, rt := range routes {
		for _, auth := range []struct {
			name, header string
			want         int
		}{
			{"none", "", 401},
			{"wrong", "Bearer nope", 401},
			{"prefix", "Bearer " + testToken[:5], 401},
			{"longer", "Bearer " + testToken + "x", 401},
			{"basic", "Basic " + testToken, 401},
			{"right", "Bearer " + testToken, 200},
			{"scheme case", "bearer " + testToken, 200},
		} {
			t.Run(rt.path+"/"+auth.name, func(t *testing.T) {
				req, _ := http.NewRequest(rt.method, base+rt.path, strings.NewReader(rt.body))
				if auth.header != "" {
					req.Header.Set("Authorization", auth.header)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != auth.want {
					t.Fatalf("%s %s with %q = %d, want %d", rt.method, rt.path, auth.name, resp.StatusCode, auth.want)
				}
				if auth.want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			})
		}
	}
	r := call(t, "POST", base+"/drain", "", "")
	if msg := r.errorMessage(t); !strings.Contains(msg, "token") {
		t.Errorf("401 message %q", msg)
	}
	// Reads stay open.
	if r := call(t, "GET", srv.URL+"/api/v1/upstreams", "", ""); r.code != 200 {
		t.Errorf("GET upstreams without token = %d", r.code)
	}
}

func TestUnknownIs404AndWrongMethod405(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001")
	srv := serve(t, Options{Token: testToken}, p)
	for _, c := range []struct {
		name, method, path string
		want               int
	}{
		{"unknown upstream", "POST", "/api/v1/upstreams/nope/backends/127.0.0.1:9001/drain", 404},
		{"unknown backend", "POST", "/api/v1/upstreams/web/backends/127.0.0.1:9999/drain", 404},
		{"malformed address", "POST", "/api/v1/upstreams/web/backends/not-an-address/ready", 404},
		{"unknown backend weight", "PUT", "/api/v1/upstreams/web/backends/10.0.0.1:80/weight", 404},
		{"unknown route", "GET", "/api/v1/nothing", 404},
		{"unknown verb", "POST", "/api/v1/upstreams/web/backends/127.0.0.1:9001/explode", 404},
		{"GET on drain", "GET", "/api/v1/upstreams/web/backends/127.0.0.1:9001/drain", 405},
		{"POST on list", "POST", "/api/v1/upstreams", 405},
		{"dot segments", "POST", "/api/v1/upstreams/web/backends/127.0.0.1:1/../127.0.0.1:9001/drain", 404},
		{"double slash", "GET", "//api/v1/upstreams", 404},
		{"trailing slash", "GET", "/api/v1/upstreams/", 404},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := ""
			if c.method == "PUT" {
				body = `{"weight":2}`
			}
			r := call(t, c.method, srv.URL+c.path, testToken, body)
			if r.code != c.want {
				t.Fatalf("%s %s = %d %s, want %d", c.method, c.path, r.code, r.body, c.want)
			}
			r.errorMessage(t)
			if c.want == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestBadBodyIs400(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001")
	srv := serve(t, Options{}, p)
	weight := srv.URL + "/api/v1/upstreams/web/backends/127.0.0.1:9001/weight"
	for _, body := range []string{
		``, `nope`, `{}`, `{"weight":"3"}`, `{"weight":1.5}`, `{"weight":-1}`, `{"weight":10001}`,
		`{"weight":2,"extra":1}`, `{"weight":2}{"weight":3}`, `[2]`,
	} {
		r := call(t, "PUT", weight, "", body)
		if r.code != 400 {
			t.Errorf("PUT weight %q = %d %s, want 400", body, r.code, r.body)
			continue
		}
		r.errorMessage(t)
	}
	if b := p.Lookup("127.0.0.1:9001"); b.Weight() != 1 {
		t.Errorf("weight changed to %d by bad bodies", b.Weight())
	}
	drain := srv.URL + "/api/v1/upstreams/web/backends/127.0.0.1:9001/drain"
	if r := call(t, "POST", drain, "", `{"force":true}`); r.code != 400 {
		t.Errorf("drain with parameters = %d, want 400", r.code)
	}
	if r := call(t, "POST", drain, "", `{}`); r.code != 200 {
		t.Errorf("drain with {} = %d %s, want 200", r.code, r.body)
	}
	big := `{"weight":2` + strings.Repeat(" ", maxBodyBytes) + `}`
	if r := call(t, "PUT", weight, "", big); r.code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body = %d, want 413", r.code)
	}
}

func TestDrainIdempotentAndReady(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	srv := serve(t, Options{}, p)
	b := p.Lookup("127.0.0.1:9001")
	base := srv.URL + "/api/v1/upstreams/web/backends/127.0.0.1:9001"

	// A request in flight keeps the backend draining.
	if !b.Acquire() {
		t.Fatal("Acquire refused before drain")
	}
	for i := range 2 {
		r := call(t, "POST", base+"/drain", "", "")
		if r.code != 200 {
			t.Fatalf("drain #%d = %d %s", i+1, r.code, r.body)
		}
		if got := r.backend(t); got.Admin != "draining" || got.Eligible || got.InFlight != 1 {
			t.Fatalf("drain #%d reply = %+v, want draining, not eligible, 1 in flight", i+1, got)
		}
	}
	for range 20 {
		if got := p.Pick(0, nil); got == b {
			t.Fatal("Pick returned the drained backend")
		}
	}
	if b.Acquire() {
		t.Fatal("Acquire admitted a new request after drain")
	}
	b.Release(balancer.ResultOK)
	if got := findIn(t, upstreams(t, srv.URL), "web", "127.0.0.1:9001"); got.Admin != "drained" || got.InFlight != 0 {
		t.Fatalf("after the last request: %+v, want drained", got)
	}
	var drains uint64
	b.Transitions(func(r balancer.Reason, on bool, n uint64) {
		if r == balancer.ReasonDrain && on {
			drains = n
		}
	})
	if drains != 1 {
		t.Errorf("drain transitions = %d, want 1 (idempotent)", drains)
	}

	for i := range 2 {
		r := call(t, "POST", base+"/ready", "", "")
		if got := r.backend(t); r.code != 200 || got.Admin != "ready" || !got.Eligible {
			t.Fatalf("ready #%d = %d %+v", i+1, r.code, got)
		}
	}
}

func TestWeightApplies(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	srv := serve(t, Options{}, p)
	url := srv.URL + "/api/v1/upstreams/web/backends/127.0.0.1:9002/weight"
	r := call(t, "PUT", url, "", `{"weight":4}`)
	if got := r.backend(t); r.code != 200 || got.Weight != 4 {
		t.Fatalf("PUT weight 4 = %d %+v", r.code, got)
	}
	b := p.Lookup("127.0.0.1:9002")
	if b.Weight() != 4 {
		t.Fatalf("pool weight = %d, want 4", b.Weight())
	}
	// The published snapshot already routes 4 of 5 requests there.
	n := 0
	for range 500 {
		if p.Pick(0, nil) == b {
			n++
		}
	}
	if n != 400 {
		t.Errorf("backend with weight 4 of 5 got %d of 500 picks, want 400", n)
	}
	r = call(t, "PUT", url, "", `{"weight":0}`)
	if got := r.backend(t); r.code != 200 || got.Weight != 1 {
		t.Fatalf("PUT weight 0 (clear) = %d %+v, want weight 1", r.code, got)
	}
}

// Addresses arrive as written, percent-encoded or in another spelling of
// the same IP and port.
func TestAddressSpellings(t *testing.T) {
	p := newPool(t, "web", "[::1]:9001", "127.0.0.1:9002", "Backend.Example:80")
	srv := serve(t, Options{}, p)
	for _, c := range []struct{ path, want string }{
		{"[::1]:9001", "[::1]:9001"},
		{"%5B%3A%3A1%5D%3A9001", "[::1]:9001"},
		{"[0:0::1]:09001", "[::1]:9001"},
		{"127.0.0.1:9002", "127.0.0.1:9002"},
		{"127.0.0.1%3A9002", "127.0.0.1:9002"},
		{"backend.example.:80", "Backend.Example:80"},
	} {
		r := call(t, "POST", srv.URL+"/api/v1/upstreams/web/backends/"+c.path+"/drain", "", "")
		if r.code != 200 {
			t.Errorf("drain %s = %d %s", c.path, r.code, r.body)
			continue
		}
		if got := r.backend(t).Address; got != c.want {
			t.Errorf("drain %s drained %s, want %s", c.path, got, c.want)
		}
	}
	for _, path := range []string{"%5B%3A%3A1%5D", "::1:9001", "127.0.0.1%2F9002", "127.0.0.1:0", "127.0.0.1:99999"} {
		if r := call(t, "POST", srv.URL+"/api/v1/upstreams/web/backends/"+path+"/drain", "", ""); r.code != 404 {
			t.Errorf("drain %s = %d, want 404", path, r.code)
		}
	}
}

func TestHealthzReadyzStatusMetrics(t *testing.T) {
	var ready atomic.Bool
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("kelpie_fake 1\n"))
	})
	srv := serve(t, Options{
		Ready:   ready.Load,
		Status:  func() any { return map[string]string{"version": "v-test"} },
		Metrics: metrics,
	})
	if r := call(t, "GET", srv.URL+"/healthz", "", ""); r.code != 200 {
		t.Errorf("healthz = %d", r.code)
	}
	if r := call(t, "GET", srv.URL+"/readyz", "", ""); r.code != 503 {
		t.Errorf("readyz while not ready = %d, want 503", r.code)
	}
	ready.Store(true)
	if r := call(t, "GET", srv.URL+"/readyz", "", ""); r.code != 200 {
		t.Errorf("readyz when ready = %d, want 200", r.code)
	}
	ready.Store(false) // shutdown begins
	if r := call(t, "GET", srv.URL+"/readyz", "", ""); r.code != 503 {
		t.Errorf("readyz during shutdown = %d, want 503", r.code)
	}
	if r := call(t, "GET", srv.URL+"/api/v1/status", "", ""); r.code != 200 || !strings.Contains(string(r.body), "v-test") {
		t.Errorf("status = %d %s", r.code, r.body)
	}
	if r := call(t, "GET", srv.URL+"/metrics", "", ""); r.code != 200 || string(r.body) != "kelpie_fake 1\n" {
		t.Errorf("metrics = %d %q", r.code, r.body)
	}
	if r := call(t, "GET", serve(t, Options{}).URL+"/metrics", "", ""); r.code != 404 {
		t.Errorf("metrics without a handler = %d, want 404", r.code)
	}
}

func TestDashboardServed(t *testing.T) {
	srv := serve(t, Options{})
	r := call(t, "GET", srv.URL+"/", "", "")
	if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %q", r.code, r.header.Get("Content-Type"))
	}
	if !strings.Contains(string(r.body), "api/v1/upstreams") || strings.Contains(string(r.body), "https://") {
		t.Error("dashboard does not poll the API, or loads something from the network")
	}
	if r.header.Get("Content-Security-Policy") == "" {
		t.Error("dashboard without a Content-Security-Policy")
	}
}

// Another web page must not drive the API through the operator's browser.
func TestCrossSiteRefused(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001")
	srv := serve(t, Options{}, p)
	url := srv.URL + "/api/v1/upstreams/web/backends/127.0.0.1:9001/drain"
	for _, c := range []struct {
		name   string
		header map[string]string
		host   string
		want   int
	}{
		{"foreign origin", map[string]string{"Origin": "http://evil.example"}, "", 403},
		{"null origin", map[string]string{"Origin": "null"}, "", 403},
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site"}, "", 403},
		{"rebound host name", nil, "evil.example:9901", 403},
		{"same origin", map[string]string{"Origin": srv.URL}, "", 200},
		{"localhost", nil, "localhost:9901", 200},
		{"curl", nil, "", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", url, nil)
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			if c.host != "" {
				req.Host = c.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("= %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
}

func TestTokenNeverLogged(t *testing.T) {
	var logs testkit.LogBuffer
	p := newPool(t, "web", "127.0.0.1:9001")
	srv := serve(t, Options{Token: testToken, Logger: logs.Logger()}, p)
	url := srv.URL + "/api/v1/upstreams/web/backends/127.0.0.1:9001/drain"
	call(t, "POST", url, testToken+"-wrong", "")
	call(t, "POST", url, testToken, "")
	if !strings.Contains(logs.String(), "admin drain") || !strings.Contains(logs.String(), "refused") {
		t.Fatalf("expected a refusal and a drain in the log:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), testToken) {
		t.Fatalf("token in the log:\n%s", logs.String())
	}
}
