package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// HedgeDelay is retries.hedge.after: a duration, or HedgeAuto ("auto"),
// a delay derived from the upstream's recent p95 (proxy.Upstream.HedgeAuto).
type HedgeDelay time.Duration

// HedgeAuto is `after: auto`.
const HedgeAuto HedgeDelay = -1

// UnmarshalYAML reads "auto" or a duration.
func (h *HedgeDelay) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Value == "auto" {
		*h = HedgeAuto
		return nil
	}
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: retries.hedge.after: want auto or a duration with a unit, like \"50ms\"; got %q", n.Line, n.Value)}}
	}
	*h = HedgeDelay(d)
	return nil
}

// MarshalYAML writes "auto" or the duration.
func (h HedgeDelay) MarshalYAML() (any, error) {
	if h == HedgeAuto {
		return "auto", nil
	}
	return time.Duration(h).String(), nil
}
