package config

import (
	"strings"
	"testing"
	"time"
)

// TestHedgeAfterAuto: retries.hedge.after takes auto or a duration, says
// where a bad value is, and `config -defaults`' rendering reads back.
func TestHedgeAfterAuto(t *testing.T) {
	base := "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    retries:\n      hedge: {after: %s}\n"
	for _, tc := range []struct {
		after string
		want  HedgeDelay
	}{{"auto", HedgeAuto}, {"50ms", HedgeDelay(50 * time.Millisecond)}} {
		c, err := Parse("k.yaml", []byte(strings.Replace(base, "%s", tc.after, 1)))
		if err != nil {
			t.Fatalf("after: %s: %v", tc.after, err)
		}
		h := c.Upstreams[0].Retries.Hedge
		if h.After != tc.want || h.Max != 1 {
			t.Fatalf("after: %s: got after %d max %d, want %d max 1", tc.after, h.After, h.Max, tc.want)
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "after: "+tc.after) {
			t.Fatalf("after: %s: rendered as\n%s", tc.after, out)
		}
		back, err := Parse("k.yaml", out)
		if err != nil || back.Upstreams[0].Retries.Hedge.After != tc.want {
			t.Fatalf("after: %s: does not read back: %v", tc.after, err)
		}
	}
	for _, bad := range []string{"soon", "-5ms", "0s", "[1]"} {
		_, err := Parse("k.yaml", []byte(strings.Replace(base, "%s", bad, 1)))
		if err == nil || !strings.Contains(err.Error(), "k.yaml:5:") {
			t.Errorf("after: %s: got %v, want a problem at k.yaml:5", bad, err)
		}
	}
}
