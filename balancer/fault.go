package balancer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FaultKind is the kind of an injected fault (a failover drill's).
type FaultKind uint8

// Fault kinds. Each acts at kelpie's edge for one backend, on its traffic
// and on its active probes alike.
const (
	FaultRefuse    FaultKind = iota + 1 // connects are refused
	FaultBlackhole                      // nothing answers: connects hang until their timeout
	FaultStatus                         // every request is answered with Status by kelpie itself
	FaultDelay                          // every request and probe waits Delay first
)

// ErrBadFault is wrapped by ParseFault's errors.
var ErrBadFault = errors.New("bad fault")

// Fault is a fault injected for one backend. Immutable once set.
type Fault struct {
	Kind   FaultKind
	Status int           // FaultStatus: the status answered, 100-599
	Delay  time.Duration // FaultDelay: the added wait
}

// maxFaultDelay bounds a delay fault: a drill that holds requests longer
// than this tests the client's patience, not kelpie's failover.
const maxFaultDelay = time.Minute

// ParseFault reads a fault as the drill API and CLI spell it: "refuse",
// "blackhole", "status=503" or "delay=500ms".
func ParseFault(s string) (Fault, error) {
	name, arg, hasArg := strings.Cut(s, "=")
	switch {
	case name == "refuse" && !hasArg:
		return Fault{Kind: FaultRefuse}, nil
	case name == "blackhole" && !hasArg:
		return Fault{Kind: FaultBlackhole}, nil
	case name == "status" && hasArg:
		n, err := strconv.Atoi(arg)
		if err != nil || n < 100 || n > 599 {
			return Fault{}, fmt.Errorf("%w %q: status must be a number from 100 to 599", ErrBadFault, s)
		}
		return Fault{Kind: FaultStatus, Status: n}, nil
	case name == "delay" && hasArg:
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 || d > maxFaultDelay {
			return Fault{}, fmt.Errorf("%w %q: delay must be a duration above 0 and at most %s", ErrBadFault, s, maxFaultDelay)
		}
		return Fault{Kind: FaultDelay, Delay: d}, nil
	}
	return Fault{}, fmt.Errorf("%w %q: want refuse, blackhole, status=CODE or delay=DURATION", ErrBadFault, s)
}

// String spells f as ParseFault reads it.
func (f Fault) String() string {
	switch f.Kind {
	case FaultRefuse:
		return "refuse"
	case FaultBlackhole:
		return "blackhole"
	case FaultStatus:
		return "status=" + strconv.Itoa(f.Status)
	case FaultDelay:
		return "delay=" + f.Delay.String()
	}
	return "none"
}

// Fault returns the fault injected for b, or nil: one atomic load, for the
// data path and the probe path.
func (b *Backend) Fault() *Fault { return b.fault.Load() }

// SetFault injects f for b (nil ends it). The drill that set it is its only
// writer.
func (b *Backend) SetFault(f *Fault) { b.fault.Store(f) }
