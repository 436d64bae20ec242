package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboardShowsHAAndFleetDrains: the HA box shows the role and the
// leader, a fleet drain shows its scope and reason, and Ready on it lifts
// the fleet drain (not a local ready, which the API would refuse).
func TestDashboardShowsHAAndFleetDrains(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	fleet := &fakeFleet{pool: p, m: map[string]DrainInfo{}}
	fleet.Drain(t.Context(), "web", "127.0.0.1:9002", DrainInfo{Scope: ScopeFleet, By: "alice@ops", Reason: "kernel upgrade", At: time.Now()})
	srv := serve(t, Options{Fleet: fleet, HA: func() any {
		return map[string]any{"role": "standby", "leader": "kelpie-edge-lb1-9901", "fencing_token": 12,
			"since": time.Now(), "vip": map[string]any{"address": "10.0.0.100", "interface": "eth0", "held": false}}
	}}, p)
	ctx := browser(t)
	row := `tr[data-address="127.0.0.1:9002"]`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(row)),
		waitText("#s-ha", "standby"),
		waitText(row+" .drain-info", "fleet: kernel upgrade"),
	); err != nil {
		t.Fatalf("load dashboard: %v", err)
	}
	leader, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#s-ha-leader")))
	if err != nil || !strings.Contains(leader, "kelpie-edge-lb1-9901") || !strings.Contains(leader, "10.0.0.100") {
		t.Fatalf("leader line %q, %v", leader, err)
	}
	if err := chromedp.Do(ctx,
		click(row+` button[data-action="ready"]`),
		waitText(row+" .admin-state", "ready"),
	); err != nil {
		t.Fatalf("click Ready: %v", err)
	}
	if _, ok := fleet.Lookup("web", "127.0.0.1:9002"); ok {
		t.Fatal("Ready on a fleet drain left the fleet drain in place")
	}
}
