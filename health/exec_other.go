//go:build !unix

package health

import (
	"context"
	"fmt"

	"github.com/kelpie-lb/kelpie/balancer"
)

// execProbe fails: script checks need process groups (a unix system).
func (c *Checker) execProbe(a *ActiveOptions, b *balancer.Backend) func(context.Context, string) error {
	return func(_ context.Context, addr string) error {
		return fmt.Errorf("exec check %s: script checks need a unix system", addr)
	}
}
