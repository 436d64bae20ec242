package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// TestGrafanaDashboardMetricsExist: every kelpie_ metric the Grafana
// dashboard in deploy/grafana queries is one kelpie exports, so a renamed
// metric cannot leave a panel silently empty.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/kelpie-failover.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct{ List []struct{ Query any } }
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if s, ok := v.Query.(string); ok {
			exprs = append(exprs, s)
		}
	}

	// Every family kelpie can export, each with a sample.
	web := newPool(t, "web", "127.0.0.1:9001")
	m := New(func() []*balancer.Pool { return []*balancer.Pool{web} })
	st := m.Upstream(web)
	b := web.Lookup("127.0.0.1:9001")
	attempt(t, st, b, 502, balancer.ResultGatewayStatus)
	st.Latency.Observe(time.Millisecond)
	st.Retries.Add(1)
	st.Unavailable.Add(1)
	web.Update(b, "test", func(s *balancer.State) { s.Ejected = true })
	inc := m.Incidents("web")
	inc.Detected(b, balancer.MechanismPassive, time.Second)
	inc.Recovered(b, time.Second)
	inc.Failover(balancer.TierBackup)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		have[name] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_count", "_sum"} {
				have[name+s] = true
			}
		}
	}
	name := regexp.MustCompile(`kelpie_[a-z_]+`)
	n := 0
	for _, e := range exprs {
		for _, q := range name.FindAllString(e, -1) {
			n++
			if !have[q] {
				t.Errorf("dashboard queries %s, which kelpie does not export (query %q)", q, e)
			}
		}
	}
	if n == 0 || !strings.Contains(strings.Join(exprs, " "), "kelpie_backend_detection_seconds") {
		t.Fatalf("no kelpie metric found in %d queries", len(exprs))
	}
}
