package proxy

import (
	"errors"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

func TestRouteMatch(t *testing.T) {
	pool := balancer.NewPool(balancer.Options{})
	t.Cleanup(pool.Close)
	up := func() *Upstream { return &Upstream{Pool: pool} }
	api, apiV1, anyRoot, anyStatic, v6 := up(), up(), up(), up(), up()
	tbl, err := buildTable([]Route{
		{Host: "api.example.com", PathPrefix: "/", Upstream: api},
		{Host: "API.example.com:443", PathPrefix: "/v1/", Upstream: apiV1},
		{Host: "", PathPrefix: "", Upstream: anyRoot},
		{Host: "", PathPrefix: "/static/", Upstream: anyStatic},
		{Host: "[::1]", PathPrefix: "/", Upstream: v6},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		host, uri string
		want      *Upstream
	}{
		{"api.example.com", "/v1/users", apiV1},
		{"API.EXAMPLE.COM:8080", "/v1/users?x=1", apiV1},
		{"api.example.com", "/v1", api}, // byte prefix: "/v1" does not start with "/v1/"
		{"api.example.com", "/v2/x", api},
		{"api.example.com", "/static/x", api}, // host-specific beats any-host
		{"other.example.com", "/static/a.css", anyStatic},
		{"other.example.com", "/", anyRoot},
		{"", "/static/", anyStatic},
		{"[::1]:8080", "/x", v6},
		{"api.example.com", "/%76%31/", api}, // no decoding: routes on raw bytes
		{"api.example.com", "//v1/", api},
	}
	for _, tc := range cases {
		got := tbl.match([]byte(tc.host), pathOf([]byte(tc.uri)))
		if got == nil || got.Upstream != tc.want {
			t.Errorf("match(%q, %q) picked the wrong route", tc.host, tc.uri)
		}
	}
	only, _ := buildTable([]Route{{Host: "a.example", PathPrefix: "/x", Upstream: api}})
	if only.match([]byte("b.example"), []byte("/x")) != nil || only.match([]byte("a.example"), []byte("/y")) != nil {
		t.Error("a request matching no route got one")
	}
	if n := testing.AllocsPerRun(100, func() { tbl.match([]byte("API.Example.com:1"), []byte("/v1/a")) }); n != 0 {
		t.Errorf("match allocates %v times", n)
	}
}

func TestRouteErrors(t *testing.T) {
	pool := balancer.NewPool(balancer.Options{})
	t.Cleanup(pool.Close)
	for name, routes := range map[string][]Route{
		"nil upstream": {{Host: "a"}},
		"nil pool":     {{Host: "a", Upstream: &Upstream{}}},
		"duplicate":    {{Host: "A", PathPrefix: "/", Upstream: &Upstream{Pool: pool}}, {Host: "a:80", PathPrefix: "/", Upstream: &Upstream{Pool: pool}}},
	} {
		if _, err := New(Options{}, routes); !errors.Is(err, ErrBadRoute) {
			t.Errorf("%s: err = %v, want ErrBadRoute", name, err)
		}
	}
}

func TestRoutingEndToEndAndReload(t *testing.T) {
	a := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("a") })
	b := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("b") })
	upA := &Upstream{Pool: newPool(t, balancer.RoundRobin, a.addr)}
	upB := &Upstream{Pool: newPool(t, balancer.RoundRobin, b.addr)}
	px := startProxy(t, Options{},
		Route{Host: "a.example", Upstream: upA},
		Route{PathPrefix: "/b/", Upstream: upB},
	)
	c := clientFor(px.addr)
	check := func(host, uri string, status int, body string) {
		t.Helper()
		resp := do(t, c, "GET", host, uri)
		if resp.StatusCode() != status || (body != "" && string(resp.Body()) != body) {
			t.Errorf("%s%s: %d %q, want %d %q", host, uri, resp.StatusCode(), resp.Body(), status, body)
		}
	}
	check("A.Example:80", "/anything", 200, "a")
	check("a.example", "/b/x", 200, "a") // host route first
	check("z.example", "/b/x", 200, "b")
	check("z.example", "/c", 404, "kelpie: no route\n")

	if err := px.SetRoutes([]Route{{Upstream: upB}}); err != nil {
		t.Fatal(err)
	}
	check("a.example", "/anything", 200, "b")
	check("z.example", "/c", 200, "b")
	if err := px.SetRoutes([]Route{{Host: "x"}}); err == nil {
		t.Fatal("bad routes accepted")
	}
	check("z.example", "/c", 200, "b") // the old table still serves
}
