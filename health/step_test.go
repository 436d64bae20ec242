package health

import (
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

const (
	U = balancer.HealthUnknown
	H = balancer.HealthHealthy
	D = balancer.HealthUnhealthy
)

func TestStep(t *testing.T) {
	tests := []struct {
		name       string
		start      balancer.Health
		rise, fall int
		results    string // P = pass, F = fail
		want       string // verdict after each result
	}{
		{"unknown pass is healthy", U, 2, 3, "P", "H"},
		{"unknown needs fall failures too", U, 2, 3, "FFF", "UUD"},
		{"unknown F,P,F never trips fall=2", U, 2, 2, "FPF", "UHH"},
		{"unknown F,F trips fall=2", U, 2, 2, "FF", "UD"},
		{"fall 3 needs three in a row", H, 2, 3, "FFF", "HHD"},
		{"rise 2 needs two in a row", D, 2, 3, "PP", "DH"},
		{"F,P,F never trips fall=2", H, 2, 2, "FPFPFPF", "HHHHHHH"},
		{"P,F,P never trips rise=2", D, 2, 3, "PFPFP", "DDDDD"},
		{"flap then settle down", H, 2, 2, "FPFF", "HHHD"},
		{"flap then settle up", D, 2, 2, "PFPP", "DDDH"},
		{"fall 1 and rise 1 follow every result", H, 1, 1, "FPFP", "DHDH"},
		{"agreeing results reset nothing more", H, 2, 3, "PPFFPFFF", "HHHHHHHD"},
		{"full cycle", U, 2, 3, "FPFFFPPFP", "UHHHDDHHH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := probeState{Health: tt.start}
			got := make([]byte, 0, len(tt.results))
			prev := tt.start
			for _, r := range tt.results {
				var changed bool
				s, changed = step(s, r == 'P', tt.rise, tt.fall)
				if changed != (s.Health != prev) {
					t.Fatalf("changed=%v but %s -> %s", changed, prev, s.Health)
				}
				prev = s.Health
				got = append(got, "UHD"[s.Health])
			}
			if string(got) != tt.want {
				t.Errorf("results %s from %s: verdicts %s, want %s", tt.results, tt.start, got, tt.want)
			}
		})
	}
}
