package balancer

import "fmt"

// Failback is a pool's failback policy.
type Failback uint8

// Failback policies.
const (
	// FailbackAuto returns a recovered backend to rotation at once (after
	// its rise, with slow start).
	FailbackAuto Failback = iota
	// FailbackManual keeps a backend that left rotation for a health reason
	// out once it recovers, as awaiting_ready, until an operator readies it
	// (Pool.Undrain). With backups, traffic stays on the backup tier until
	// then.
	FailbackManual
)

// ParseFailback reads "auto" or "manual".
func ParseFailback(s string) (Failback, error) {
	switch s {
	case "auto", "":
		return FailbackAuto, nil
	case "manual":
		return FailbackManual, nil
	}
	return 0, fmt.Errorf("failback %q: want auto or manual", s)
}

func (f Failback) String() string {
	if f == FailbackManual {
		return "manual"
	}
	return "auto"
}

// holdFailback marks st awaiting_ready when, under manual failback, the
// change from old clears the last health reason. Called with mu held.
func (p *Pool) holdFailback(old State, st *State) {
	if p.opts.Failback == FailbackManual && old.Down()&HealthReasons != 0 && st.Down()&HealthReasons == 0 {
		st.AwaitingReady = true
	}
}
