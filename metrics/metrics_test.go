package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kelpie-lb/kelpie/balancer"
)

func newPool(t *testing.T, name string, addrs ...string) *balancer.Pool {
	t.Helper()
	p := balancer.NewPool(balancer.Options{Name: name})
	var ms []balancer.Member
	for _, a := range addrs {
		ms = append(ms, balancer.Member{Address: a})
	}
	p.SetMembers(balancer.SourceStatic, ms)
	t.Cleanup(p.Close)
	return p
}

func attempt(t *testing.T, st *UpstreamStats, b *balancer.Backend, status int, r balancer.Result) {
	t.Helper()
	if !b.Acquire() {
		t.Fatal("Acquire refused")
	}
	b.Release(r)
	st.CountCode(b, status)
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape = %d %s", resp.StatusCode, body)
	}
	return string(body)
}

func TestMetricsFromPoolState(t *testing.T) {
	web := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	b1, b2 := web.Lookup("127.0.0.1:9001"), web.Lookup("127.0.0.1:9002")
	m := New(func() []*balancer.Pool { return []*balancer.Pool{web} })
	st := m.Upstream(web)
	for range 3 {
		attempt(t, st, b1, 200, balancer.ResultOK)
	}
	attempt(t, st, b1, 404, balancer.ResultOK)
	attempt(t, st, b2, 502, balancer.ResultConnectFailed)
	if !b2.Acquire() { // one request still in flight
		t.Fatal("Acquire refused")
	}
	defer b2.Release(balancer.ResultOK)
	for _, h := range []balancer.Health{balancer.HealthUnhealthy, balancer.HealthHealthy, balancer.HealthUnhealthy} {
		web.Update(b2, "test", func(s *balancer.State) { s.Health = h })
	}
	st.Latency.Observe(3 * time.Millisecond)
	st.Latency.Observe(2 * time.Second)
	st.Retries.Add(2)
	st.Unavailable.Add(1)

	m.ConfigReloads.WithLabelValues(ReloadSuccess).Inc()
	m.SetConsulStatus(func() map[string]time.Duration { return map[string]time.Duration{"web": 1500 * time.Millisecond} })

	text := scrape(t, m)
	for _, line := range []string{
		`kelpie_requests_total{backend="127.0.0.1:9001",code="200",upstream="web"} 3`,
		`kelpie_requests_total{backend="127.0.0.1:9001",code="404",upstream="web"} 1`,
		`kelpie_requests_total{backend="127.0.0.1:9002",code="502",upstream="web"} 1`,
		`kelpie_backend_eligible{backend="127.0.0.1:9001",upstream="web"} 1`,
		`kelpie_backend_eligible{backend="127.0.0.1:9002",upstream="web"} 0`,
		`kelpie_backend_in_flight{backend="127.0.0.1:9002",upstream="web"} 1`,
		`kelpie_backend_failures_total{backend="127.0.0.1:9002",upstream="web"} 1`,
		`kelpie_backend_transitions_total{backend="127.0.0.1:9002",reason="unhealthy",upstream="web"} 2`,
		`kelpie_backend_transitions_total{backend="127.0.0.1:9002",reason="unhealthy_cleared",upstream="web"} 1`,
		`kelpie_retries_total{upstream="web"} 2`,
		`kelpie_upstream_unavailable_total{upstream="web"} 1`,
		`kelpie_upstream_eligible_backends{upstream="web"} 1`,
		`kelpie_request_duration_seconds_bucket{upstream="web",le="0.005"} 1`,
		`kelpie_request_duration_seconds_bucket{upstream="web",le="2.5"} 2`,
		`kelpie_request_duration_seconds_count{upstream="web"} 2`,
		`kelpie_config_reloads_total{result="success"} 1`,
		`kelpie_config_reloads_total{result="error"} 0`,
		`kelpie_consul_last_sync_age_seconds{service="web"} 1.5`,
		`go_goroutines `,
		`process_start_time_seconds `,
	} {
		if !strings.Contains(text, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", text)
	}
}

// The label sets are those design.md fixes.
func TestMetricLabels(t *testing.T) {
	web := newPool(t, "web", "127.0.0.1:9001")
	m := New(func() []*balancer.Pool { return []*balancer.Pool{web} })
	attempt(t, m.Upstream(web), web.Lookup("127.0.0.1:9001"), 200, balancer.ResultOK)
	web.Drain("127.0.0.1:9001")
	m.ConfigReloads.WithLabelValues(ReloadFailure).Inc()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"kelpie_requests_total":             {"backend", "code", "upstream"},
		"kelpie_request_duration_seconds":   {"upstream"},
		"kelpie_backend_eligible":           {"backend", "upstream"},
		"kelpie_backend_in_flight":          {"backend", "upstream"},
		"kelpie_retries_total":              {"upstream"},
		"kelpie_backend_transitions_total":  {"backend", "reason", "upstream"},
		"kelpie_config_reloads_total":       {"result"},
		"kelpie_upstream_unavailable_total": {"upstream"},
		"kelpie_backend_failures_total":     {"backend", "upstream"},
		"kelpie_tunnels_open":               {"upstream"},
	}
	types := map[string]dto.MetricType{"kelpie_request_duration_seconds": dto.MetricType_HISTOGRAM,
		"kelpie_backend_eligible": dto.MetricType_GAUGE, "kelpie_requests_total": dto.MetricType_COUNTER,
		"kelpie_tunnels_open": dto.MetricType_GAUGE}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	for name, labels := range want {
		f := got[name]
		if f == nil || len(f.Metric) == 0 {
			t.Errorf("%s missing", name)
			continue
		}
		var names []string
		for _, l := range f.Metric[0].Label {
			names = append(names, l.GetName())
		}
		if strings.Join(names, ",") != strings.Join(labels, ",") {
			t.Errorf("%s labels = %v, want %v", name, names, labels)
		}
		if typ, ok := types[name]; ok && f.GetType() != typ {
			t.Errorf("%s type = %v, want %v", name, f.GetType(), typ)
		}
	}
}

// A scrape survives duplicate upstream names and a nil pool instead of
// failing as a whole.
func TestScrapeRobust(t *testing.T) {
	a, b := newPool(t, "web", "127.0.0.1:1"), newPool(t, "web", "127.0.0.1:2")
	m := New(func() []*balancer.Pool { return []*balancer.Pool{a, nil, b} })
	if text := scrape(t, m); !strings.Contains(text, `kelpie_backend_eligible{backend="127.0.0.1:1",upstream="web"} 1`) {
		t.Errorf("scrape lacks the first pool:\n%s", text)
	}
	if text := scrape(t, New(nil)); !strings.Contains(text, "kelpie_config_reloads_total") {
		t.Error("metrics without pools lack config reloads")
	}
}

// TestCodes: status codes are counted per backend; a backend that left the
// pool has its counters dropped at the next scrape, or at the next first
// code of another backend when nobody scrapes.
func TestCodes(t *testing.T) {
	web := newPool(t, "web", "127.0.0.1:1", "127.0.0.1:2")
	m := New(func() []*balancer.Pool { return []*balancer.Pool{web} })
	st := m.Upstream(web)
	if m.Upstream(web) != st {
		t.Fatal("Upstream made a second UpstreamStats for the same pool")
	}
	b1, b2 := web.Lookup("127.0.0.1:1"), web.Lookup("127.0.0.1:2")
	for _, c := range []int{200, 200, 503, 0, 600, -1} {
		st.CountCode(b1, c)
	}
	st.CountCode(b2, 404)
	got := map[int]uint64{}
	st.Codes(b1, func(c int, n uint64) { got[c] = n })
	if len(got) != 2 || got[200] != 2 || got[503] != 1 {
		t.Fatalf("codes of b1 %v, want 200:2 503:1", got)
	}
	web.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:1"}})
	if text := scrape(t, m); strings.Contains(text, "127.0.0.1:2") {
		t.Errorf("a backend that left is still scraped:\n%s", text)
	}
	n := 0
	st.Codes(b2, func(int, uint64) { n++ })
	if n != 0 {
		t.Error("the counters of a backend that left were kept")
	}

	st.CountCode(b1, 200)
	web.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:3"}}) // b1 leaves, no scrape
	st.CountCode(web.Lookup("127.0.0.1:3"), 200)
	n = 0
	st.Codes(b1, func(int, uint64) { n++ })
	if n != 0 {
		t.Error("without scrapes, the counters of a backend that left were kept past another backend's first code")
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{100 * time.Microsecond, 500 * time.Microsecond, 3 * time.Millisecond, 2 * time.Minute} {
		h.Observe(d)
	}
	count, sum, cum := h.Read()
	if count != 4 {
		t.Fatalf("count %d", count)
	}
	if want := (120*time.Second + 3600*time.Microsecond).Seconds(); sum < want-1e-9 || sum > want+1e-9 {
		t.Fatalf("sum %v, want %v", sum, want)
	}
	// Bounds are inclusive (Prometheus le): 500us falls in the .0005 bucket.
	if cum[0] != 2 || cum[2] != 2 || cum[3] != 3 || cum[len(cum)-1] != 3 {
		t.Fatalf("cumulative %v", cum)
	}
}

// TestHistogramConcurrent observes from many goroutines at once: the
// shards' sums lose nothing and put each duration in its bucket.
func TestHistogramConcurrent(t *testing.T) {
	var h Histogram
	const workers, each = 8, 5000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				h.Observe(time.Duration(1+(w+i)%2) * time.Millisecond) // 1ms and 2ms, alternately
			}
		})
	}
	wg.Wait()
	count, sum, cum := h.Read()
	if count != workers*each {
		t.Fatalf("count %d, want %d", count, workers*each)
	}
	if want := (workers * each * 3 / 2 * time.Millisecond).Seconds(); sum < want-1e-6 || sum > want+1e-6 {
		t.Fatalf("sum %v, want %v", sum, want)
	}
	if cum[0] != 0 || cum[1] != workers*each/2 || cum[2] != workers*each {
		t.Fatalf("cumulative %v: want 0, then half at 1ms, all by 2.5ms", cum)
	}
}
