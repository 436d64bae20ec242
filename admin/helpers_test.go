package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

// newPool returns a static pool named name with addrs as members.
func newPool(t testing.TB, name string, addrs ...string) *balancer.Pool {
	t.Helper()
	p := balancer.NewPool(balancer.Options{Name: name})
	ms := make([]balancer.Member, len(addrs))
	for i, a := range addrs {
		ms[i] = balancer.Member{Address: a}
	}
	p.SetMembers(balancer.SourceStatic, ms)
	t.Cleanup(p.Close)
	return p
}

// serve starts a real admin server on loopback over pools.
func serve(t testing.TB, o Options, pools ...*balancer.Pool) *httptest.Server {
	t.Helper()
	if o.Upstreams == nil {
		o.Upstreams = func() []*balancer.Pool { return pools }
	}
	srv := httptest.NewServer(New(o))
	t.Cleanup(srv.Close)
	return srv
}

type reply struct {
	code   int
	header http.Header
	body   []byte
}

// call makes one request; token "" sends no Authorization header.
func call(t testing.TB, method, url, token, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{code: resp.StatusCode, header: resp.Header, body: data}
}

// errorMessage decodes a JSON error body, failing the test if it is not one.
func (r reply) errorMessage(t testing.TB) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error reply Content-Type = %q, want application/json (body %q)", ct, r.body)
	}
	var e ErrorResponse
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {\"error\":\"...\"}: %v", r.body, err)
	}
	return e.Error
}

func (r reply) backend(t testing.TB) Backend {
	t.Helper()
	var b Backend
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return b
}

func upstreams(t testing.TB, base string) UpstreamsResponse {
	t.Helper()
	r := call(t, "GET", base+"/api/v1/upstreams", "", "")
	if r.code != 200 {
		t.Fatalf("GET /api/v1/upstreams = %d %s", r.code, r.body)
	}
	var resp UpstreamsResponse
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func findIn(t testing.TB, resp UpstreamsResponse, upstream, addr string) Backend {
	t.Helper()
	for _, u := range resp.Upstreams {
		if u.Name != upstream {
			continue
		}
		for _, b := range u.Backends {
			if b.Address == addr {
				return b
			}
		}
	}
	t.Fatalf("no backend %s in upstream %s: %+v", addr, upstream, resp)
	return Backend{}
}
