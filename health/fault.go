package health

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// probeFaulted runs one probe of b through the fault a drill injected for it
// (balancer.Fault), so that active probing finds the fault the way it would
// find the real failure: a refused connect, a probe that times out, a
// failing status, a slow answer. Without a fault it is probe itself.
func probeFaulted(ctx context.Context, probe func(context.Context, string) error, b *balancer.Backend, a *ActiveOptions) error {
	f := b.Fault()
	if f == nil {
		return probe(ctx, b.Address())
	}
	start := time.Now()
	switch f.Kind {
	case balancer.FaultRefuse:
		return fmt.Errorf("probe %s: drill fault %s: %w", b.Address(), f, syscall.ECONNREFUSED)
	case balancer.FaultBlackhole:
		<-ctx.Done()
		return fmt.Errorf("probe %s: drill fault %s: timeout after %s", b.Address(), f, time.Since(start).Round(time.Millisecond))
	case balancer.FaultStatus:
		// A TCP probe connects: it does not see the status, as it would
		// not see a real backend's.
		if a.Path != "" && (f.Status < a.ExpectStatusMin || f.Status > a.ExpectStatusMax) {
			return fmt.Errorf("probe %s: drill fault %s: status %d, want %d-%d", b.Address(), f, f.Status, a.ExpectStatusMin, a.ExpectStatusMax)
		}
	case balancer.FaultDelay:
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe %s: drill fault %s: timeout after %s", b.Address(), f, time.Since(start).Round(time.Millisecond))
		case <-t.C:
		}
	}
	return probe(ctx, b.Address())
}
