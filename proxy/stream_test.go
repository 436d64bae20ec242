package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

const streamSize = 256 << 20

// TestProxyProcess is the proxy half of TestStreamingKeepsMemoryFlat: the
// test binary re-runs itself with KELPIE_PROXY_BACKEND set, serves a proxy to
// that backend and prints its address. Without the variable it does nothing.
func TestProxyProcess(t *testing.T) {
	backend := os.Getenv("KELPIE_PROXY_BACKEND")
	if backend == "" {
		return
	}
	pool := balancer.NewPool(balancer.Options{Name: "web"})
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: backend}})
	p, err := New(withTestIO(Options{}), []Route{{Upstream: &Upstream{Pool: pool}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); os.Exit(0) }() // parent gone: exit
	_ = p.Serve(ln)
}

// pattern is an endless deterministic byte stream.
type pattern struct{ n, size int64 }

func (r *pattern) Read(b []byte) (int, error) {
	if r.n >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.n; int64(len(b)) > rem {
		b = b[:rem]
	}
	n := copy(b, patternBlock[r.n%256:])
	r.n += int64(n)
	return n, nil
}

var patternBlock = func() []byte {
	b := make([]byte, 64<<10+256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// TestStreamingKeepsMemoryFlat moves 256 MiB up
// and 256 MiB down through a proxy running in its own process and asserts
// the proxy's peak RSS (VmHWM) stays far below 160 MiB.
func TestStreamingKeepsMemoryFlat(t *testing.T) {
	be := startBackendServer(t, &fasthttp.Server{
		StreamRequestBody: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			switch string(ctx.Path()) {
			case "/up":
				n, err := io.Copy(io.Discard, ctx.RequestBodyStream())
				if err != nil {
					ctx.Error(err.Error(), 500)
					return
				}
				fmt.Fprintf(ctx, "%d", n)
			case "/down":
				ctx.SetBodyStream(&pattern{size: streamSize}, streamSize)
			}
		},
	})

	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KELPIE_PROXY_BACKEND="+be.addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	addr := ""
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("proxy process printed no address")
	}
	go io.Copy(io.Discard, stdout) //nolint:errcheck

	c := &fasthttp.HostClient{Addr: addr, StreamResponseBody: true, MaxIdemponentCallAttempts: 1}
	for _, size := range []int{streamSize} { // chunked uploads: TestEndToEndBodies
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.Header.SetMethod("PUT")
		req.SetRequestURI("http://a/up")
		req.SetBodyStream(&pattern{size: streamSize}, size)
		if err := c.DoTimeout(req, resp, 2*time.Minute); err != nil {
			t.Fatalf("upload (size %d): %v", size, err)
		}
		body, _ := io.ReadAll(resp.BodyStream())
		if resp.StatusCode() != 200 || string(body) != strconv.Itoa(streamSize) {
			t.Fatalf("upload (size %d): %d %q", size, resp.StatusCode(), body)
		}
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}

	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://a/down")
	if err := c.DoTimeout(req, resp, 2*time.Minute); err != nil {
		t.Fatalf("download: %v", err)
	}
	n, err := io.Copy(io.Discard, resp.BodyStream())
	if err != nil || n != streamSize {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	_ = resp.CloseBodyStream()

	hwm := vmHWM(t, cmd.Process.Pid)
	t.Logf("proxy peak RSS after 256 MiB up and 256 MiB down: %d MiB", hwm>>20)
	if limit := int64(96 << 20); hwm > limit {
		t.Errorf("proxy peak RSS %d MiB, want < %d MiB", hwm>>20, limit>>20)
	}
}

// vmHWM reads a process's peak resident set size in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
