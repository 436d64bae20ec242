// Command wsload measures a proxy's WebSocket tunnels for bench/ws.sh,
// against bench/cmd/wsecho behind it:
//
//   - -mode echo: -c tunnels each send masked binary frames of -size bytes
//     as fast as the tunnel takes them while a reader counts the echo;
//     prints the echoed MB/s and the proxy's CPU µs per echoed MB (each
//     byte crosses the proxy twice: up and back).
//   - -mode idle: opens -n tunnels, exchanges one small frame on each, and
//     prints the proxy's resident memory per open tunnel (VmRSS of -pid and
//     its children, after minus before, over n).
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/bench/internal/proc"
)

func main() {
	addr := flag.String("addr", "", "proxy address host:port")
	mode := flag.String("mode", "echo", "echo | idle")
	conc := flag.Int("c", 8, "echo: tunnels")
	size := flag.Int("size", 16<<10, "echo: frame payload bytes")
	dur := flag.Duration("d", 5*time.Second, "echo: duration")
	n := flag.Int("n", 5000, "idle: tunnels to hold open")
	pid := flag.Int("pid", 0, "proxy process id for CPU and memory (0: none)")
	flag.Parse()
	var err error
	switch *mode {
	case "echo":
		err = echo(*addr, *conc, *size, *dur, *pid)
	case "idle":
		err = idle(*addr, *n, *pid)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
}

// dial opens one tunnel: TCP, the upgrade request, and a 101 back.
func dial(addr string) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	var key [16]byte
	rand.Read(key[:])
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: bench.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", base64.StdEncoding.EncodeToString(key[:]))
	br := bufio.NewReaderSize(c, 32<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, nil, fmt.Errorf("upgrade answered %s", resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	return c, br, nil
}

// frame is one masked binary WebSocket frame (RFC 6455 §5.2) of size bytes.
func frame(size int) []byte {
	var f []byte
	switch {
	case size < 126:
		f = []byte{0x82, 0x80 | byte(size)}
	case size < 1<<16:
		f = []byte{0x82, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(f[2:], uint16(size))
	default:
		f = make([]byte, 10)
		f[0], f[1] = 0x82, 0x80|127
		binary.BigEndian.PutUint64(f[2:], uint64(size))
	}
	mask := []byte{0x1b, 0x2c, 0x3d, 0x4e}
	f = append(f, mask...)
	payload := make([]byte, size)
	rand.Read(payload)
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return append(f, payload...)
}

func echo(addr string, conc, size int, dur time.Duration, pid int) error {
	msg := frame(size)
	conns := make([]net.Conn, conc)
	readers := make([]*bufio.Reader, conc)
	for i := range conc {
		c, br, err := dial(addr)
		if err != nil {
			return err
		}
		conns[i], readers[i] = c, br
	}
	var got atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	cpu0, start := proc.CPUTicks(pid), time.Now()
	for i, c := range conns {
		wg.Go(func() {
			for !stop.Load() {
				if _, err := c.Write(msg); err != nil {
					return
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := readers[i].Read(buf)
				if stop.Load() || err != nil {
					return
				}
				got.Add(int64(n))
			}
		})
	}
	time.Sleep(dur)
	stop.Store(true)
	el, cpu := time.Since(start).Seconds(), float64(proc.CPUTicks(pid)-cpu0)/proc.TicksPerSecond
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	mb := float64(got.Load()) / 1e6
	fmt.Printf("mode=echo tunnels=%d frame=%d mb=%.0f mb_s=%.1f cpu_s=%.2f cpu_us_mb=%.0f\n",
		conc, size, mb, mb/el, cpu, cpu*1e6/max(mb, 1e-9))
	return nil
}

func idle(addr string, n, pid int) error {
	before := proc.RSSKB(pid)
	conns := make([]net.Conn, n)
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	next := atomic.Int64{}
	hello := frame(32)
	for range 32 { // dialers
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c, br, err := dial(addr)
				if err == nil {
					_, err = c.Write(hello)
				}
				if err == nil {
					_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, err = io.ReadFull(br, make([]byte, len(hello)))
				}
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
					if c != nil {
						c.Close()
					}
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d tunnels failed, first: %v", f, n, firstErr)
	}
	time.Sleep(2 * time.Second) // let the proxy settle (GC, worker buffers)
	after := proc.RSSKB(pid)
	fmt.Printf("mode=idle tunnels=%d rss_before_kb=%d rss_after_kb=%d rss_kb_per_tunnel=%.1f\n",
		n, before, after, float64(after-before)/float64(n))
	return nil
}
