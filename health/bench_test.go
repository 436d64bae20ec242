package health

import (
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

// BenchmarkAdmit measures the guard's cost per attempt on the data path.
func BenchmarkAdmit(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"breaker", Options{Passive: PassiveOptions{ConsecutiveFailures: 5}}},
		{"no-breaker", Options{Passive: PassiveOptions{ConsecutiveFailures: 5}, Breaker: BreakerOptions{Disabled: true}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := New(tc.opts)
			p := balancer.NewPool(balancer.Options{NewGuard: c.NewGuard})
			p.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "a:1"}})
			be := p.Lookup("a:1")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					done, err := be.Admit()
					if err != nil {
						b.Fatal(err)
					}
					done(balancer.ResultOK)
				}
			})
		})
	}
}
