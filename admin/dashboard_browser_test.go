package admin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kelpie-lb/kelpie/balancer"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// browser starts headless Chromium for the test. Without Chromium the test
// fails (CI installs it with tools/deps.sh, and a skipped browser test would
// hide a broken page); only go test -short skips it.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(testkit.Chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 860),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// simulateTraffic counts attempts on backends in the background so the
// page has rates to show; it stops when the test ends.
func simulateTraffic(t *testing.T, rates map[*balancer.Backend]int) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for b, perSecond := range rates {
				for range perSecond / 20 {
					if b.Acquire() {
						res := balancer.ResultOK
						if n%37 == 0 {
							res = balancer.ResultReset
						}
						b.Release(res)
					}
				}
			}
		}
	}()
}

// TestDashboardInBrowser loads the dashboard in headless Chromium over a
// real admin server and real pools, sees the backends, drains one with the
// Drain button (answering the token prompt), and checks through the API
// that it is draining, then drained, then ready again.
func TestDashboardInBrowser(t *testing.T) {
	web := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")
	api := balancer.NewPool(balancer.Options{Name: "api", Algorithm: balancer.LeastConn, Policy: "least_conn, sticky cookie kelpie_sticky"})
	t.Cleanup(api.Close)
	api.SetMembers(balancer.SourceConsul, []balancer.Member{
		{Address: "127.0.1.11:8080", Weight: 2}, {Address: "127.0.1.12:8080", Weight: 2},
		{Address: "127.0.1.13:8080"}, {Address: "127.0.9.50:8080", Backup: true},
	})
	srv := serve(t, Options{Token: testToken, Status: func() any { return map[string]string{"version": "kelpie test"} }}, web, api)

	// Some variety for the eye and the screenshot.
	sick := api.Lookup("127.0.1.13:8080")
	api.Update(sick, "probe: 503", func(s *balancer.State) { s.Health, s.Breaker = balancer.HealthUnhealthy, balancer.BreakerOpen })
	for _, b := range web.Snapshot().Members {
		web.Update(b, "test", func(s *balancer.State) { s.Health = balancer.HealthHealthy })
	}
	simulateTraffic(t, map[*balancer.Backend]int{
		web.Lookup("127.0.0.1:9001"): 120, web.Lookup("127.0.0.1:9002"): 140, web.Lookup("127.0.0.1:9003"): 100,
		api.Lookup("127.0.1.11:8080"): 60, api.Lookup("127.0.1.12:8080"): 80,
	})

	// One backend slow and erring, ejected by latency outlier detection:
	// its row names the reason and shows its latency and success rate.
	slow := web.Lookup("127.0.0.1:9003")
	for range 10 {
		slow.Observe(150*time.Millisecond, 500, false)
	}
	web.Update(slow, "latency outlier", func(s *balancer.State) { s.Slow = true })

	victim := web.Lookup("127.0.0.1:9002")
	if !victim.Acquire() { // a long request in flight: the drain shows "draining"
		t.Fatal("Acquire refused")
	}
	released := false
	release := func() {
		if !released {
			released = true
			victim.Release(balancer.ResultOK)
		}
	}
	defer release()

	ctx := browser(t)
	var prompts atomic.Int32
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			prompts.Add(1)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: testToken})
		}
	}()

	row := `tr[data-address="127.0.0.1:9002"]`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(row)),
	); err != nil {
		t.Fatalf("load dashboard: %v", err)
	}
	webText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`section[data-upstream="web"]`)))
	if err != nil {
		t.Fatalf("read the web section: %v", err)
	}
	for _, want := range []string{"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "round robin", "serving", "healthy"} {
		if !strings.Contains(webText, want) {
			t.Errorf("web section lacks %q:\n%s", want, webText)
		}
	}

	slowText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-address="127.0.0.1:9003"]`)))
	if err != nil {
		t.Fatalf("read the slow backend's row: %v", err)
	}
	m := regexp.MustCompile(`(\d+(?:\.\d)?) ms · (\d+\.\d)%`).FindStringSubmatch(slowText)
	// The state cell says "out" and why; the ejected cell (between tabs)
	// names the detector.
	if !strings.Contains(slowText, "\tslow\t") || m == nil {
		t.Fatalf("slow backend's row lacks slow in its ejected cell or its latency and success rate:\n%s", slowText)
	}
	if ms, _ := strconv.ParseFloat(m[1], 64); ms < 50 {
		t.Errorf("slow backend's row shows %s ms, want its ~150 ms peak-EWMA:\n%s", m[1], slowText)
	}
	if rate, _ := strconv.ParseFloat(m[2], 64); rate >= 100 {
		t.Errorf("slow backend's row shows a success rate of %s%%, want under 100 after 10 500s:\n%s", m[2], slowText)
	}

	apiText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`section[data-upstream="api"]`)))
	if err != nil {
		t.Fatalf("read the api section: %v", err)
	}
	if want := "least conn, sticky cookie kelpie_sticky"; !strings.Contains(apiText, want) {
		t.Errorf("api section lacks its policy %q:\n%s", want, apiText)
	}

	if err := chromedp.Do(ctx,
		click(row+` button[data-action="drain"]`),
		waitText(row+" .admin-state", "draining"),
	); err != nil {
		t.Fatalf("click Drain: %v", err)
	}
	if got := findIn(t, upstreams(t, srv.URL), "web", "127.0.0.1:9002"); got.Admin != "draining" || got.Eligible {
		t.Fatalf("after Drain the API reports %+v, want draining and not eligible", got)
	}
	if n := prompts.Load(); n != 1 {
		t.Errorf("token prompts = %d, want 1", n)
	}

	release()
	if err := chromedp.Do(ctx,
		waitText(row+" .admin-state", "drained"),
		waitText(row+` button[data-action="ready"]`, "Ready"),
		// Rates need two polls; wait for them so the picture is alive.
		chromedp.Poll[chromedp.Void](`!["0.00", "–"].includes(document.getElementById("s-rate").textContent)`,
			chromedp.WithPollingTimeout(10*time.Second)),
	); err != nil {
		t.Fatalf("drained state on the page: %v", err)
	}
	if got := findIn(t, upstreams(t, srv.URL), "web", "127.0.0.1:9002"); got.Admin != "drained" {
		t.Fatalf("API reports %s, want drained", got.Admin)
	}
	screenshot(t, ctx)

	if err := chromedp.Do(ctx,
		click(row+` button[data-action="ready"]`),
		waitText(row+" .admin-state", "ready"),
	); err != nil {
		t.Fatalf("click Ready: %v", err)
	}
	if got := findIn(t, upstreams(t, srv.URL), "web", "127.0.0.1:9002"); got.Admin != "ready" || !got.Eligible {
		t.Fatalf("after Ready the API reports %+v", got)
	}
	if n := prompts.Load(); n != 1 {
		t.Errorf("token prompts = %d, want 1 (the token is kept for the tab)", n)
	}
}

// click clicks the element at sel with the mouse, as a user would. The page
// re-renders its rows on every poll, so the node found can be replaced
// before the click lands ("Could not find node with given id"); the click
// is then made again on the new node, a few times at most.
func click(sel string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tgt *chromedp.Target) (chromedp.Void, error) {
		var err error
		for range 5 {
			var v chromedp.Void
			if v, err = chromedp.Click(chromedp.CSS(sel))(ctx, tgt); err == nil || !strings.Contains(err.Error(), "Could not find node") {
				return v, err
			}
		}
		return chromedp.Void{}, err
	}
}

// waitText waits until the element at sel reads text.
func waitText(sel, text string) chromedp.Action[chromedp.Void] {
	js := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent === %q`, sel, text)
	return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(10*time.Second))
}

// screenshot saves the page in the test's temp dir; with
// KELPIE_UPDATE_SCREENSHOT=1 it also refreshes docs/dashboard.png, after a
// few more seconds of traffic so the sparklines have something to draw.
func screenshot(t *testing.T, ctx context.Context) {
	t.Helper()
	update := os.Getenv("KELPIE_UPDATE_SCREENSHOT") != ""
	if update {
		chromedp.Do(ctx, chromedp.Sleep(8*time.Second)) // more rate history for the sparklines
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	if update {
		if err := os.WriteFile(filepath.Join("..", "docs", "dashboard.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
