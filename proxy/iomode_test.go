package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
	"github.com/valyala/fasthttp"
)

// stdIOFiles hold the end-to-end tests TestStdIOSuite reruns with std I/O:
// framing, truncation, the differential, timeouts, streaming, errors and
// retries over real sockets, parking idle connections. Every Test in them
// runs, new ones included.
var stdIOFiles = []string{
	"truncate_test.go", "framing_test.go", "differential_test.go", "timeout_test.go",
	"stream_test.go", "e2e_test.go", "hostile_test.go", "forward_test.go",
	"connect_test.go", "reached_test.go", "tunnel_test.go", "iomode_test.go", "idle_test.go",
}

// The proxy's end-to-end tests pass with Options.IO = IOStd too: the test
// binary reruns them with KELPIE_TEST_IO=std, which startProxy (and the
// tests that call New themselves) pass on as Options.IO. TestIOModeInEffect,
// in the rerun, checks that the connections really were net.Conn's.
func TestStdIOSuite(t *testing.T) {
	if testIO != "" {
		return // this is the rerun (or a run pinned to one mode): no recursion
	}
	if testing.Short() {
		// Nothing here needs a tool the machine may lack; it is skipped to
		// keep the -short tier under a minute, since it tests no new case.
		t.Skip("-short: the rerun of the proxy's end-to-end tests with io: std (~25 s) runs in the full suite (make test)")
	}
	re := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\)`)
	var names []string
	for _, f := range stdIOFiles {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			if m[1] != "TestStdIOSuite" && m[1] != "TestProxyProcess" { // TestProxyProcess is a helper process
				names = append(names, m[1])
			}
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^("+strings.Join(names, "|")+")$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "KELPIE_TEST_IO=std")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the end-to-end tests fail with std I/O: %v\n%s", err, failures(out))
	}
	for _, n := range names {
		if !strings.Contains(string(out), "--- PASS: "+n+" ") {
			t.Errorf("%s did not pass with std I/O", n)
		}
	}
	if !strings.Contains(string(out), "io mode in effect: std") {
		t.Errorf("the rerun did not run in std mode:\n%s", lastLines(out, 20))
	}
}

// lastLines is the last n lines of out.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// failures is the lines of a verbose test run that say what failed, or its
// end when none do (a panic, a timeout).
func failures(out []byte) string {
	var b strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "--- FAIL") || strings.Contains(l, "_test.go:") && !strings.Contains(l, "io mode in effect") {
			b.WriteString(l + "\n")
		}
	}
	if b.Len() == 0 {
		return lastLines(out, 60)
	}
	return b.String()
}

// Options.IO reaches both sides: client connections (clientConn) and
// backend connections (upConn) use raw I/O exactly in raw mode.
func TestIOModeInEffect(t *testing.T) {
	want := testIO
	if want == "" {
		want = DefaultIO
	}
	t.Logf("io mode in effect: %s", want)
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}
	p, err := New(withTestIO(Options{}), []Route{{Upstream: up}})
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 1)
	p.server.ConnState = func(c net.Conn, s fasthttp.ConnState) {
		if s == fasthttp.StateNew {
			conns <- c
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		<-served
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("response %q, %v", line, err)
	}

	raw := want == IORaw && runtime.GOOS == "linux"
	cc, ok := (<-conns).(*clientConn)
	if !ok {
		t.Fatal("the server's connection is not a clientConn")
	}
	if _, isRaw := cc.rw.(*rawio.Conn); isRaw != raw {
		t.Errorf("io %s: client connection reads with %T, want raw I/O %v", want, cc.rw, raw)
	}
	if p.conns.std != (want == IOStd) {
		t.Errorf("io %s: backend transports std=%v", want, p.conns.std)
	}
	var b *balancer.Backend
	for _, m := range up.Pool.Snapshot().Members {
		b = m
	}
	ht, ok := p.conns.get(up, b).(*hostTransport)
	if !ok {
		t.Fatal("the backend's transport is not a hostTransport")
	}
	nc, err := ht.hc.Dial(be.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if u := nc.(*upConn); (u.raw != nil) != raw {
		t.Errorf("io %s: backend connection raw I/O %v, want %v", want, u.raw != nil, raw)
	}
}

// An unknown mode is refused, naming the mode.
func TestIOModeUnknownRefused(t *testing.T) {
	_, err := New(Options{IO: "fast"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"fast"`) {
		t.Fatalf("New with io fast: %v, want an error naming it", err)
	}
}
