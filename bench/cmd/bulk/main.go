// Command bulk drives large bodies through a proxy for the benchmark's bulk
// rows: -conns keep-alive connections each upload (-dir up: PUT with a
// -bytes body of zeros) or download (-dir down: GET /bulk?bytes=N) one body
// after another for -duration, after -warmup. With -pids it measures those
// processes' CPU time over the window and prints it per GB moved:
//
//	bulk -url http://127.0.0.1:8080/bulk -dir down -bytes 67108864 -conns 4 -duration 5s -pids 123
//	mb_s=... bytes=... bodies=... errors=... cpu_s_per_gb=... cpu_pct=...
//
// MB is 10^6 bytes, GB 10^9. Bodies cut off by the window count the bytes
// that moved. bench/cmd/backend answers /bulk on its listeners.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/bench/internal/proc"
)

func main() {
	url := flag.String("url", "", "URL to send the bodies to (the backend's /bulk through the proxy)")
	dir := flag.String("dir", "down", "up (PUT bodies) or down (GET bodies)")
	size := flag.Int64("bytes", 64<<20, "bytes per body")
	conns := flag.Int("conns", 4, "concurrent connections")
	duration := flag.Duration("duration", 5*time.Second, "measured window")
	warmup := flag.Duration("warmup", time.Second, "unmeasured load before the window")
	pids := flag.String("pids", "", "comma-separated PIDs whose CPU time is measured over the window")
	flag.Parse()
	if *url == "" || (*dir != "up" && *dir != "down") || *size <= 0 || *conns <= 0 {
		log.Fatal("bulk: needs -url, -dir up|down, -bytes > 0 and -conns > 0")
	}
	pl, err := proc.ParsePIDs(*pids)
	if err != nil {
		log.Fatalf("bulk: %v", err)
	}
	res := run(*url, *dir == "up", *size, *conns, *warmup, *duration, pl)
	fmt.Println(res)
}

// counter is what the workers add to once the window opens.
type counter struct {
	measuring atomic.Bool
	bytes     atomic.Int64
	bodies    atomic.Int64
	errors    atomic.Int64
}

func run(url string, up bool, size int64, conns int, warmup, window time.Duration, pids []int) string {
	tr := &http.Transport{
		MaxIdleConnsPerHost: conns,
		ReadBufferSize:      256 << 10,
		WriteBufferSize:     256 << 10,
		DisableCompression:  true,
	}
	cl := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	var c counter
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := one(ctx, cl, url, up, size, &c); err != nil && ctx.Err() == nil {
					c.errors.Add(1)
				}
			}
		}()
	}
	time.Sleep(warmup) // unmeasured load, on purpose
	cpu0, err0 := proc.CPUSeconds(pids)
	t0 := time.Now()
	c.measuring.Store(true)
	time.Sleep(window)
	c.measuring.Store(false)
	el := time.Since(t0).Seconds()
	cpu1, err1 := proc.CPUSeconds(pids)
	cpu := cpu1 - cpu0
	cancel()
	wg.Wait()
	tr.CloseIdleConnections()

	b := c.bytes.Load()
	perGB, pct := "-", "-"
	if len(pids) > 0 && b > 0 && errors.Join(err0, err1) == nil {
		perGB = fmt.Sprintf("%.3f", cpu/(float64(b)/1e9))
		pct = fmt.Sprintf("%.1f", cpu/el*100)
	}
	return fmt.Sprintf("mb_s=%.1f bytes=%d bodies=%d errors=%d cpu_s_per_gb=%s cpu_pct=%s",
		float64(b)/1e6/el, b, c.bodies.Load(), c.errors.Load(), perGB, pct)
}

// one moves one body, counting the bytes that moved while the window was open.
func one(ctx context.Context, cl *http.Client, url string, up bool, size int64, c *counter) error {
	var req *http.Request
	var err error
	if up {
		req, err = http.NewRequestWithContext(ctx, http.MethodPut, url, &counted{r: io.LimitReader(zeros{}, size), c: c})
		req.ContentLength = size
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, url+"?bytes="+strconv.FormatInt(size, 10), nil)
	}
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if !up {
		body = &counted{r: resp.Body, c: c}
	}
	n, err := io.CopyBuffer(io.Discard, body, make([]byte, 256<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || (!up && n != size) {
		return fmt.Errorf("status %d, %d of %d bytes", resp.StatusCode, n, size)
	}
	if c.measuring.Load() {
		c.bodies.Add(1)
	}
	return nil
}

// counted counts the bytes read through it while the window is open.
type counted struct {
	r io.Reader
	c *counter
}

func (r *counted) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 && r.c.measuring.Load() {
		r.c.bytes.Add(int64(n))
	}
	return n, err
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
