// Command backend is the benchmark's upstream: one fasthttp server answering
// every request with a small 200 on each of -n loopback listeners, so a proxy
// under test can balance over many "backends" held by one process.
//
// It writes the listeners' addresses, one per line, to -addrs (or stdout) once
// all of them accept connections, and serves until SIGINT or SIGTERM.
//
//	backend -n 3 -addrs /tmp/addrs     # three backends on free ports
//	backend -free 4                    # print four free loopback ports and exit
//	backend -listen :8080 -name b1     # one backend on :8080 (in a container)
//
// -name puts the name in the body and an X-Backend header, so tests see who
// answered; -delays honours ?delay=DURATION (at most a minute) for tests
// that need requests in flight. Both are off in the benchmark.
//
// Under /bulk it serves large bodies for the bulk rows: GET /bulk?bytes=N
// answers with N zero bytes (streamed, Content-Length N), and a request with
// a body there is read to the end and discarded, then answered with a small 200.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	n := flag.Int("n", 3, "number of listeners (backends) to open on 127.0.0.1")
	addrsFile := flag.String("addrs", "", "write the listen addresses here, one per line (default stdout)")
	free := flag.Int("free", 0, "print this many free 127.0.0.1 ports and exit")
	listen := flag.String("listen", "", "serve on this one address instead of -n loopback listeners (e.g. :8080 in a container)")
	name := flag.String("name", "", "answer with this name in the body and an X-Backend header")
	delays := flag.Bool("delays", false, "honour ?delay=DURATION (at most 1m) before answering")
	flag.Parse()

	if *free > 0 {
		if err := printFreePorts(*free); err != nil {
			log.Fatal(err)
		}
		return
	}

	body := []byte("hello from the kelpie bench backend\n")
	if *name != "" {
		body = []byte("hello from " + *name + "\n")
	}
	srv := &fasthttp.Server{
		Name:                          "bench-backend",
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: true,
		StreamRequestBody:             true, // bulk uploads are read in pieces, never held
		Handler: func(ctx *fasthttp.RequestCtx) {
			if bytes.HasPrefix(ctx.Path(), []byte("/bulk")) {
				bulk(ctx)
				return
			}
			if *delays {
				if d, err := time.ParseDuration(string(ctx.QueryArgs().Peek("delay"))); err == nil && d > 0 {
					time.Sleep(min(d, time.Minute))
				}
			}
			if *name != "" {
				ctx.Response.Header.Set("X-Backend", *name)
			}
			ctx.Response.Header.SetContentTypeBytes([]byte("text/plain"))
			ctx.SetBody(body)
		},
	}

	lns := make([]net.Listener, 0, *n)
	addrs := make([]string, 0, *n)
	for i := 0; i < *n; i++ {
		addr := "127.0.0.1:0"
		if *listen != "" {
			if i > 0 {
				break
			}
			addr = *listen
		}
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			log.Fatalf("listen %d: %v", i, err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		go func(ln net.Listener) {
			if err := srv.Serve(ln); err != nil {
				log.Printf("serve %s: %v", ln.Addr(), err)
			}
		}(ln)
	}

	out := strings.Join(addrs, "\n") + "\n"
	if *addrsFile == "" {
		fmt.Print(out)
	} else {
		// Write then rename so a reader polling for the file never sees half of it.
		tmp := *addrsFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *addrsFile); err != nil {
			log.Fatal(err)
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = srv.Shutdown()
}

// bulk serves /bulk: N zero bytes for GET ?bytes=N, and any request body
// read to its end and dropped.
func bulk(ctx *fasthttp.RequestCtx) {
	if r := ctx.RequestBodyStream(); r != nil {
		if _, err := io.Copy(io.Discard, r); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
	}
	n, err := ctx.QueryArgs().GetUint("bytes")
	if err != nil || !ctx.IsGet() {
		n = 0
	}
	ctx.Response.Header.SetContentTypeBytes([]byte("application/octet-stream"))
	ctx.SetBodyStream(io.LimitReader(zeros{}, int64(n)), n)
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// printFreePorts holds n ephemeral listeners open at once (so the ports are
// distinct), prints their ports and closes them. Another process could take a
// port before the caller binds it; on an otherwise idle loopback that is rare.
func printFreePorts(n int) error {
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("free port %d: %w", i, err)
		}
		lns = append(lns, ln)
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
