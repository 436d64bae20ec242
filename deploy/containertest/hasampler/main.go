// Command hasampler is the HA container suite's observer: every -every it
// GETs each URL (a new connection each time, so an answer comes from
// whoever holds the address now) and, with -vip, looks whether an interface
// of its network namespace holds that address; it prints one JSON line per
// round. It stops by itself after -for.
//
// Run next to a kelpie (docker run --network container:ID) it sees that
// kelpie's interfaces and admin API even when the kelpie is cut off from
// every network; on the private network it samples the VIP as a client.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// answer is one URL's outcome in a round.
type answer struct {
	Code    int    `json:"code,omitempty"`
	Err     string `json:"err,omitempty"`
	Backend string `json:"backend,omitempty"` // X-Backend of a proxied answer
	ID      string `json:"id,omitempty"`      // /api/v1/ha: the answering kelpie
	Role    string `json:"role,omitempty"`
	Held    bool   `json:"held,omitempty"`
	Token   uint64 `json:"token,omitempty"`
}

// round is one output line.
type round struct {
	T   int64    `json:"t"` // Unix nanoseconds at the start of the round
	VIP bool     `json:"vip"`
	R   []answer `json:"r"`
}

func main() {
	every := flag.Duration("every", 50*time.Millisecond, "sampling period")
	limit := flag.Duration("for", 10*time.Minute, "stop after this long")
	timeout := flag.Duration("timeout", 300*time.Millisecond, "per-request timeout")
	vip := flag.String("vip", "", "report whether a local interface holds this address")
	flag.Parse()
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	enc := json.NewEncoder(os.Stdout)
	end := time.Now().Add(*limit)
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for now := time.Now(); now.Before(end); now = <-tick.C {
		r := round{T: now.UnixNano(), VIP: *vip != "" && holds(*vip)}
		for _, u := range flag.Args() {
			r.R = append(r.R, get(client, u))
		}
		enc.Encode(r)
	}
}

func get(c *http.Client, url string) answer {
	resp, err := c.Get(url)
	if err != nil {
		return answer{Err: err.Error()}
	}
	defer resp.Body.Close()
	a := answer{Code: resp.StatusCode, Backend: resp.Header.Get("X-Backend")}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ha struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		Token uint64 `json:"fencing_token"`
		VIP   *struct {
			Held bool `json:"held"`
		} `json:"vip"`
	}
	if json.Unmarshal(body, &ha) == nil {
		a.ID, a.Role, a.Token = ha.ID, ha.Role, ha.Token
		a.Held = ha.VIP != nil && ha.VIP.Held
	}
	return a
}

func holds(ip string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}
