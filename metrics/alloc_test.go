//go:build !race

package metrics

import (
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

// TestDataPathAllocs: what the data path records per request (latency,
// status code) allocates nothing once a backend has its counters.
func TestDataPathAllocs(t *testing.T) {
	web := newPool(t, "web", "127.0.0.1:1")
	st := New(func() []*balancer.Pool { return []*balancer.Pool{web} }).Upstream(web)
	b := web.Lookup("127.0.0.1:1")
	st.CountCode(b, 200)
	if n := testing.AllocsPerRun(2000, func() {
		st.Latency.Observe(1234)
		st.CountCode(b, 200)
		st.Retries.Add(1)
	}); n != 0 {
		t.Errorf("Observe+CountCode: %v allocs/op, want 0", n)
	}
}
