package rawio

import (
	"errors"
	"io"
	"os"
	"time"
)

// Lazy deadlines. fasthttp moves a connection's read deadline two or three
// times per request (idle wait, then read timeout; response timeout), and
// every move is a runtime timer update under the poller's lock. A deadline
// that only moves later does not need the timer moved: Deadline keeps the
// armed one, which fires no later than the one asked for, and when it fires
// early the read (or write) re-arms it to the deadline asked for and carries
// on. The timer is then touched about once per timeout period per connection
// instead of several times per request, and a deadline still cuts a read off
// at the time asked for.
//
// Not done, on measurement (bench/README.md): yielding the processor before a
// read that will likely find nothing (the response just after the request
// was written, the next request just after a response) saves Go's
// read-EAGAIN-park round trip, but starves the netpoller under load: the p99
// at saturation doubled.

// Deadline is one direction's deadline on a connection. A connection is
// used by one goroutine at a time per direction (fasthttp's model), so it
// needs no locking.
type Deadline struct {
	// Apply sets the socket's deadline: the wrapped connection's
	// SetReadDeadline or SetWriteDeadline. Set it before first use.
	Apply func(time.Time) error
	want  time.Time // the deadline asked for; zero: none
	armed time.Time // the deadline set on the socket; zero: none
}

// Set records t as the deadline. The socket's moves only when t is earlier
// than the armed one, or none is armed; otherwise the armed one fires first
// and Rearm moves it on.
func (d *Deadline) Set(t time.Time) error {
	d.want = t
	if t.IsZero() || (!d.armed.IsZero() && !t.Before(d.armed)) {
		return nil
	}
	d.armed = t
	return d.Apply(t)
}

// Rearm reports whether err is the armed deadline firing before the one asked
// for, and if so arms the one asked for: the caller retries its read or write.
func (d *Deadline) Rearm(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if !d.want.IsZero() && !time.Now().Before(d.want) {
		return false // the real deadline
	}
	d.armed = d.want
	return d.Apply(d.want) == nil
}

// Read reads from r into b; when the armed deadline fires before the one
// asked for, it re-arms it and reads again.
func (d *Deadline) Read(r io.Reader, b []byte) (int, error) {
	for {
		n, err := r.Read(b)
		if n > 0 || err == nil || !d.Rearm(err) {
			return n, err
		}
	}
}

// Write writes all of b to w; when the armed deadline fires before the one
// asked for, it re-arms it and writes the rest.
func (d *Deadline) Write(w io.Writer, b []byte) (int, error) {
	n, err := w.Write(b)
	for n < len(b) && err != nil && d.Rearm(err) {
		var m int
		m, err = w.Write(b[n:])
		n += m
	}
	return n, err
}

// Want is the deadline last asked for (Set); zero: none.
func (d *Deadline) Want() time.Time { return d.want }

// Armed is the deadline on the socket; zero: none. It is at or before Want
// until it fires and Rearm moves it on.
func (d *Deadline) Armed() time.Time { return d.armed }
