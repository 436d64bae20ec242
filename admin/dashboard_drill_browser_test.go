package admin

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kelpie-lb/kelpie/balancer"
)

// TestDashboardDrillButton: in headless Chromium, the Drill button asks for
// confirmation and the token, starts a drill through the API (seen there as
// running, with its fault injected), and the row shows the drill's outcome
// once it is aborted. The last detection and recovery times show too.
func TestDashboardDrillButton(t *testing.T) {
	web := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	srv := serve(t, Options{Token: testToken}, web)
	victim := web.Lookup("127.0.0.1:9002")
	// A past incident on the other backend, for the TTD/TTR line.
	other := web.Lookup("127.0.0.1:9001")
	web.Update(other, "test", func(s *balancer.State) { s.Ejected = true })
	web.Update(other, "test", func(s *balancer.State) { s.Ejected = false })

	ctx := browser(t)
	var dialogs atomic.Int32
	var sawConfirm atomic.Bool
	events := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			dialogs.Add(1)
			if ev.Type == page.DialogTypeConfirm && strings.Contains(ev.Message, "Failover drill on 127.0.0.1:9002") {
				sawConfirm.Store(true)
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: testToken})
		}
	}()

	row := `tr[data-address="127.0.0.1:9002"]`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(row)),
		waitText(`tr[data-address="127.0.0.1:9001"] .ttx`, "detected in 0ms (passive) · recovered in 0ms"),
		click(row+` button[data-action="drill"]`),
		waitText(row+" .drill-state", "drill running"),
	); err != nil {
		t.Fatalf("click Drill: %v", err)
	}
	if !sawConfirm.Load() || dialogs.Load() != 2 { // the confirmation, then the token prompt after a 401
		t.Fatalf("dialogs %d, confirmation seen %v: want the confirmation and the token prompt", dialogs.Load(), sawConfirm.Load())
	}
	r := call(t, "GET", srv.URL+"/api/v1/drills", "", "")
	var list DrillsResponse
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Drills) != 1 {
		t.Fatalf("drills: %s", r.body)
	}
	d := list.Drills[0]
	if d.Backend != victim.Address() || d.Fault != "refuse" || d.For != "30s" || d.Outcome != DrillRunning || victim.Fault() == nil {
		t.Fatalf("drill %+v, fault %v: want a running refuse drill on the victim", d, victim.Fault())
	}
	if r := call(t, "POST", srv.URL+"/api/v1/drills/"+d.ID+"/abort", testToken, ""); r.code != 202 {
		t.Fatalf("abort: %d %s", r.code, r.body)
	}
	if err := chromedp.Do(ctx, waitText(row+" .drill-state", "drill aborted")); err != nil {
		t.Fatalf("aborted drill on the page: %v", err)
	}
	if victim.Fault() != nil {
		t.Fatal("fault left after the abort")
	}
}
