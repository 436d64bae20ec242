// Command idleconns holds idle keep-alive connections open to a proxy for
// bench/idle.sh: it opens -n connections to -addr, has each serve one
// request (a few at a time), prints "open N SECONDS" and waits for a line on stdin;
// then it sends a second request on every connection, prints "alive N" (how
// many answered 200) and exits, closing them all.
//
// The connections come from -src source addresses (127.0.0.2, 127.0.0.3,
// ...) in turn, so that more than one address's ephemeral ports can be used,
// and none of 127.0.0.1's, where the proxies listen.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "", "proxy address, host:port")
	n := flag.Int("n", 10000, "connections")
	src := flag.Int("src", 1, "source addresses 127.0.0.2 .. 127.0.0.N+1")
	par := flag.Int("par", 8, "connections opened at a time")
	flag.Parse()
	raiseFDLimit(*n + 100)

	start := time.Now()
	conns := make([]net.Conn, *n)
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, *par)
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%*src))}, Timeout: 10 * time.Second, Control: portAtConnect}
				c, err := d.Dial("tcp", *addr)
				if err == nil {
					err = request(c)
				}
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				conns[i] = c
			}
		}()
	}
	for i := range *n {
		select {
		case next <- i:
		case err := <-errs:
			log.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		log.Fatal(err)
	default:
	}
	fmt.Printf("open %d %.1f\n", *n, time.Since(start).Seconds())
	bufio.NewReader(os.Stdin).ReadString('\n')
	alive := 0
	for _, c := range conns {
		if request(c) == nil {
			alive++
		}
		c.Close()
	}
	fmt.Printf("alive %d\n", alive)
}

var get = []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")

// request sends one GET and reads a 200 answer.
func request(c net.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(get); err != nil {
		return err
	}
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReaderSize(c, 1024)); err != nil {
		return err
	}
	if resp.StatusCode() != 200 {
		return fmt.Errorf("status %d", resp.StatusCode())
	}
	return nil
}

// portAtConnect sets IP_BIND_ADDRESS_NO_PORT: with a source address
// given, the port is then chosen at connect, for the whole 4-tuple, instead
// of at bind among the ports free for any destination. Without it, the
// previous proxy's connections, in TIME_WAIT, used up 127.0.0.2's ports.
func portAtConnect(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

const ipBindAddressNoPort = 24 // linux/in.h

func raiseFDLimit(n int) {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Cur >= uint64(n) {
		return
	}
	lim.Cur = min(uint64(n), lim.Max)
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
