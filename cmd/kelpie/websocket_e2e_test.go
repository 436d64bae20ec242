package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

func wsConfig(tunnelDrain string, addrs ...string) string {
	return fmt.Sprintf(`
shutdown:
  grace: 300ms
upstreams:
  - name: web
    backends:
%s    timeouts:
      tunnel_drain: %s
`, yamlBackends(addrs...), tunnelDrain)
}

func wsEcho(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_, got, err := c.Read(ctx)
	if err != nil || string(got) != msg {
		t.Fatalf("echo of %q: got %q, %v", msg, got, err)
	}
}

func wsOpen(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("websocket dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// wsClosed waits up to 5s for kelpie to close c under the client.
func wsClosed(c *websocket.Conn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	return err != nil && !errors.Is(err, context.DeadlineExceeded)
}

// TestWebSocketEndToEnd: a WebSocket through kelpie to a real backend stays
// up across a config reload, holds a drained backend "draining" until
// timeouts.tunnel_drain closes it, shows in kelpie_tunnels_open, and is
// closed by SIGTERM's shutdown after the grace period.
func TestWebSocketEndToEnd(t *testing.T) {
	t.Setenv("KELPIE_E2E_TOKEN", e2eToken)
	wb := testkit.StartWSBackend(t, nil)
	cfg := wsConfig("400ms", wb.Addr)
	ta := startApp(t, strings.Replace(cfg, "upstreams:", "admin:\n  token_env: KELPIE_E2E_TOKEN\nupstreams:", 1))
	c := wsOpen(t, "ws://"+ta.ProxyAddr+"/chat")
	wsEcho(t, c, "hello")
	if !strings.Contains(scrape(t, ta), `kelpie_tunnels_open{upstream="web"} 1`) {
		t.Fatal("kelpie_tunnels_open does not count the open tunnel")
	}

	// A reload that changes the upstream leaves the tunnel alone.
	if err := os.WriteFile(ta.Path, []byte(strings.Replace(cfg, "upstreams:", "admin:\n  token_env: KELPIE_E2E_TOKEN\nupstreams:", 1)+"    retries: {attempts: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ta.reload(); err != nil {
		t.Fatal(err)
	}
	wsEcho(t, c, "after reload")

	// Drain: the tunnel keeps the backend draining, then is closed.
	ac := &admin.Client{BaseURL: ta.AdminURL, Token: e2eToken}
	b, _, err := ac.Drain(context.Background(), "web", wb.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if b.Admin != "draining" || b.InFlight != 1 {
		t.Fatalf("drain with a tunnel open: admin %s in_flight %d, want draining 1", b.Admin, b.InFlight)
	}
	wsEcho(t, c, "while draining")
	if !wsClosed(c) {
		t.Fatal("tunnel_drain did not close the tunnel")
	}
	eventually(t, 5*time.Second, "backend drained", func() bool {
		return findBackend(t, ta, "web", wb.Addr).Admin == "drained"
	})
	if _, _, err := ac.Ready(context.Background(), "web", wb.Addr); err != nil {
		t.Fatal(err)
	}

	// SIGTERM: the tunnel gets the grace period, then is closed.
	c2 := wsOpen(t, "ws://"+ta.ProxyAddr+"/again")
	wsEcho(t, c2, "before shutdown")
	start := time.Now()
	err = ta.shutdown()
	if err == nil || !strings.Contains(err.Error(), "tunnels") {
		t.Fatalf("shutdown with a tunnel open: %v, want the tunnels reported", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("shutdown closed the tunnel after %s, before the 300ms grace", d)
	}
	if !wsClosed(c2) {
		t.Fatal("shutdown left the tunnel open")
	}
}

func scrape(t *testing.T, ta *testApp) string {
	t.Helper()
	resp, err := http.Get(ta.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestWebSocketInChromium: a page served through kelpie opens a WebSocket
// to its own origin in headless Chromium, over ws:// and over wss:// on
// kelpie's TLS listener.
func TestWebSocketInChromium(t *testing.T) {
	chrome := testkit.Chromium(t)
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	crt, key := ca.WritePair(t, dir, "site", "127.0.0.1")
	wb := testkit.StartWSBackend(t, nil)
	tlsAddr := testkit.FreeAddr(t)
	ta := startApp(t, fmt.Sprintf(`
tls:
  listen: %q
  certificates: [{cert: %q, key: %q}]
upstreams:
  - name: web
    backends:
%s`, tlsAddr, crt, key, yamlBackends(wb.Addr)))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("ignore-certificate-errors", true), // the test CA is not in Chromium's store
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()
	for _, url := range []string{"http://" + ta.ProxyAddr + "/page", "https://" + tlsAddr + "/page"} {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(url),
			chromedp.Poll[chromedp.Void](`document.title.startsWith("echo:") || document.title === "error"`, chromedp.WithPollingTimeout(20*time.Second)),
		); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		title, err := chromedp.Run(ctx, chromedp.Title())
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if title != "echo:ping" {
			t.Fatalf("%s: page title %q, want echo:ping (the WebSocket round trip)", url, title)
		}
	}
}
