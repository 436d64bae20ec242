package testkit

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"

	"github.com/coder/websocket"
)

// WSBackend is a real WebSocket echo server (coder/websocket on net/http)
// on a loopback port. Paths: /refuse answers 403 (an upgrade refused);
// /page serves an HTML page whose script opens a WebSocket to /echo on its
// own origin (ws or wss), sends "ping" and sets the title to "echo:" and
// the reply, or "error"; any other path is the echo endpoint. Upgrades
// counts the upgrade requests and XFF receives their X-Forwarded-For (when
// there is room).
type WSBackend struct {
	Addr string
	XFF  chan string
}

// wsPage is /page's HTML.
const wsPage = `<!doctype html><title>loading</title><script>
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/echo");
ws.onopen = () => ws.send("ping");
ws.onmessage = (e) => { document.title = "echo:" + e.data; };
ws.onerror = () => { document.title = "error"; };
</script>`

// StartWSBackend serves the WebSocket echo backend until the test ends;
// with cert set it serves TLS with it.
func StartWSBackend(t testing.TB, cert *tls.Certificate) *WSBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ws backend listen: %v", err)
	}
	wb := &WSBackend{Addr: ln.Addr().String(), XFF: make(chan string, 64)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/refuse":
			http.Error(w, "no websockets here", http.StatusForbidden)
			return
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte(wsPage)) //nolint:errcheck // the browser may go away
			return
		}
		select {
		case wb.XFF <- r.Header.Get("X-Forwarded-For"):
		default:
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	})}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	go srv.Serve(ln) //nolint:errcheck // ends at Close
	t.Cleanup(func() { srv.Close() })
	return wb
}
