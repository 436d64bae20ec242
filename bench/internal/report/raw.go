// Package report turns bench/run.sh's raw result lines into the benchmark's
// tables and verdicts: per-run ratios to HAProxy, their medians and geometric
// means with 95 % intervals, kelpie against its three targets, and the pooling
// of paired runs over several raw files. bench/cmd/report is its command.
package report

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/kelpie-lb/kelpie/bench/internal/stats"
)

// Base is the target every ratio is taken against.
const Base = "haproxy"

// Line is one raw result line: "load=L target=T run=R key=value ...", as
// bench/run.sh appends them to latest.raw.txt.
type Line struct {
	Load, Target string
	Run          int
	Fields       map[string]string
}

// Value is the number recorded under key; false when the key is missing, "-"
// (not measured, e.g. the CPU of "direct") or not a number.
func (l Line) Value(key string) (float64, bool) {
	s, ok := l.Fields[key]
	if !ok || s == "-" {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// Raw is the lines of one raw file, in file order.
type Raw []Line

// Parse reads raw lines; blank lines are skipped. name is used in errors.
func Parse(r io.Reader, name string) (Raw, error) {
	var out Raw
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		l := Line{Fields: map[string]string{}}
		for _, kv := range strings.Fields(text) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("raw file %s:%d: field %q is not key=value", name, n, kv)
			}
			l.Fields[k] = v
		}
		l.Load, l.Target = l.Fields["load"], l.Fields["target"]
		run, err := strconv.Atoi(l.Fields["run"])
		if l.Load == "" || l.Target == "" || err != nil {
			return nil, fmt.Errorf("raw file %s:%d: needs load=, target= and a numeric run=", name, n)
		}
		l.Run = run
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("raw file %s: %w", name, err)
	}
	return out, nil
}

// ReadFile parses the raw file at path.
func ReadFile(path string) (Raw, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("raw file: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Values is key over the runs of target under load, in file order, skipping
// runs where it was not measured.
func (raw Raw) Values(load, target, key string) []float64 {
	var v []float64
	for _, l := range raw {
		if l.Load == load && l.Target == target {
			if x, ok := l.Value(key); ok {
				v = append(v, x)
			}
		}
	}
	return v
}

// Median is the median of Values; NaN when there are none.
func (raw Raw) Median(load, target, key string) float64 {
	return stats.Median(raw.Values(load, target, key))
}

// Targets is the distinct targets under load, in order of first appearance.
func (raw Raw) Targets(load string) []string {
	var out []string
	for _, l := range raw {
		if l.Load == load && !slices.Contains(out, l.Target) {
			out = append(out, l.Target)
		}
	}
	return out
}

// Loads is the distinct loads whose name starts with prefix, in order of
// first appearance.
func (raw Raw) Loads(prefix string) []string {
	var out []string
	for _, l := range raw {
		if strings.HasPrefix(l.Load, prefix) && !slices.Contains(out, l.Load) {
			out = append(out, l.Load)
		}
	}
	return out
}

// Ratios is target's key over HAProxy's in the same load and run, one ratio
// per run where both were measured and HAProxy's is above 0, in run order. A
// run recorded twice counts its last line.
func (raw Raw) Ratios(load, target, key string) Ratios {
	x, h := map[int]float64{}, map[int]float64{}
	for _, l := range raw {
		if l.Load != load {
			continue
		}
		v, ok := l.Value(key)
		switch {
		case l.Target == target && ok:
			x[l.Run] = v
		case l.Target == target:
			delete(x, l.Run)
		case l.Target == Base && ok:
			h[l.Run] = v
		case l.Target == Base:
			delete(h, l.Run)
		}
	}
	runs := make([]int, 0, len(x))
	for r := range x {
		if h[r] > 0 {
			runs = append(runs, r)
		}
	}
	slices.Sort(runs)
	q := make([]float64, len(runs))
	for i, r := range runs {
		q[i] = x[r] / h[r]
	}
	return NewRatios(q)
}

// Ratios summarizes per-run ratios to HAProxy (below 1: lower than HAProxy's).
type Ratios struct {
	Runs      []float64      // the ratios, in run order
	Median    float64        // stats.Median of Runs; NaN when there are none
	Low, High float64        // the lowest and highest
	AtOrBelow int            // how many are at or below 1
	Geo       stats.Interval // geometric mean with its 95 % Student-t interval
}

// NewRatios summarizes v (kept, not copied).
func NewRatios(v []float64) Ratios {
	r := Ratios{Runs: v, Median: stats.Median(v), Geo: stats.GeoMean(v), Low: math.NaN(), High: math.NaN()}
	if len(v) > 0 {
		r.Low, r.High = slices.Min(v), slices.Max(v)
	}
	for _, x := range v {
		if x <= 1 {
			r.AtOrBelow++
		}
	}
	return r
}

// N is the number of ratios.
func (r Ratios) N() int { return len(r.Runs) }
