package report

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/kelpie-lb/kelpie/bench/internal/stats"
)

// PairRatios pools the paired runs of several raw files: for each proxy paired
// with HAProxy ("load=pair-PROXY"), its key over HAProxy's in the same paired
// run, file after file. Runs are matched within a file only.
func PairRatios(raws []Raw, key string) map[string][]float64 {
	out := map[string][]float64{}
	for _, raw := range raws {
		for _, load := range raw.Loads("pair-") {
			proxy := strings.TrimPrefix(load, "pair-")
			out[proxy] = append(out[proxy], raw.Ratios(load, proxy, key).Runs...)
		}
	}
	return out
}

// WritePool renders the pooled paired ratios of key as a markdown table, per
// proxy (the control first): pairs, how many at or below 1, the median, the
// geometric mean with its 95 % interval, and a Mann-Whitney z against the
// control's ratios (z > 0: the proxy's ratios are lower; |z| > 1.96 is
// significant at 5 %). When kelpie was paired and key is p99_us, a last line
// gives its p99 verdict over the pooled pairs. files is how many raw files
// were pooled.
func WritePool(w io.Writer, by map[string][]float64, key string, files int) error {
	if len(by) == 0 {
		return fmt.Errorf("pool %s: no paired runs", key)
	}
	b := bufio.NewWriter(w)
	proxies := make([]string, 0, len(by))
	for p := range by {
		proxies = append(proxies, p)
	}
	slices.SortFunc(proxies, func(a, c string) int {
		if (a == Control) != (c == Control) {
			if a == Control {
				return -1
			}
			return 1
		}
		return strings.Compare(a, c)
	})
	control, haveControl := by[Control]
	fmt.Fprintf(b, "%s over HAProxy's in the same paired run, pooled over %d files\n\n", key, files)
	fmt.Fprintf(b, "| proxy | pairs | at or below 1 | median | geometric mean (95 %% CI) | vs the control (Mann-Whitney z) |\n|---|---:|---:|---:|---|---:|\n")
	for _, p := range proxies {
		q := NewRatios(by[p])
		z, name := "-", p
		if p == Control {
			name = "haproxy-b (control)"
		} else if haveControl {
			z = fmt.Sprintf("%+.2f", stats.MannWhitneyZ(q.Runs, control))
		}
		fmt.Fprintf(b, "| %s | %d | %d | %.3fx | %.3fx (%.3f-%.3f) | %s |\n", name, q.N(), q.AtOrBelow, q.Median, q.Geo.Mean, q.Geo.Low, q.Geo.High, z)
	}
	if v, ok := by[Kelpie]; ok && key == "p99_us" {
		q := NewRatios(v)
		fmt.Fprintf(b, "\nkelpie's p99 no worse than HAProxy's, over the %d pooled pairs: %s.\n", q.N(), P99Verdict(q.Median, q.Geo).Holds)
	}
	return b.Flush()
}
