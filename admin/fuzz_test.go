package admin

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

var addressSeeds = []string{
	"127.0.0.1:9001", "[::1]:9001", "[0:0::1]:09001", "[fe80::1%eth0]:80", "host.example.:80",
	"::1:80", "[::1]", ":80", "a:b:c", "127.0.0.1:0", "127.0.0.1:65536", "[]:80", "%5B::1%5D:80", "x:1\n",
}

// canonicalAddress never panics, and its output is a host:port that is its
// own canonical form.
func FuzzCanonicalAddress(f *testing.F) {
	for _, s := range addressSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		canon, ok := canonicalAddress(addr)
		if !ok {
			return
		}
		if _, _, err := net.SplitHostPort(canon); err != nil {
			t.Fatalf("canonicalAddress(%q) = %q, not a host:port: %v", addr, canon, err)
		}
		if again, ok := canonicalAddress(canon); !ok || again != canon {
			t.Fatalf("canonicalAddress not idempotent: %q -> %q -> %q (%v)", addr, canon, again, ok)
		}
	})
}

// Whatever the path, the API answers with JSON and one of its documented
// codes, and only the named backend ever changes.
func FuzzAdminPath(f *testing.F) {
	for _, s := range addressSeeds {
		f.Add("web", s, "drain")
	}
	f.Add("w%2Fb", "127.0.0.1:9001", "ready")
	f.Add("web", "127.0.0.1:9001/../../x", "drain")
	f.Add("..", "%2e%2e", "weight")
	p := balancer.NewPool(balancer.Options{Name: "web"})
	p.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:9001"}, {Address: "[::1]:9001"}})
	srv := New(Options{Upstreams: func() []*balancer.Pool { return []*balancer.Pool{p} }})
	f.Fuzz(func(t *testing.T, name, addr, verb string) {
		target := "/api/v1/upstreams/" + name + "/backends/" + addr + "/" + verb
		req, err := http.NewRequest("POST", "http://127.0.0.1:9901"+target, nil)
		if err != nil {
			return // not a URL any client could send
		}
		req.Body = http.NoBody // as the server would give it
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 301, 307, 308, 400, 404, 405:
		default:
			t.Fatalf("POST %q = %d %s", target, rec.Code, rec.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("POST %q: body %q is not JSON", target, rec.Body)
		}
		if rec.Code == 200 {
			a, _ := v["address"].(string)
			if a != "127.0.0.1:9001" && a != "[::1]:9001" {
				t.Fatalf("POST %q changed %q", target, a)
			}
		}
	})
}
