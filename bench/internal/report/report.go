package report

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Names of the targets with a role in the report.
const (
	Direct  = "direct"    // the load straight at one backend
	Control = "haproxy-b" // a second, identical HAProxy
	Kelpie  = "kelpie"
)

// Options are the facts the raw lines do not carry. The zero value works;
// CPUs then print as "0" and "1", the scaling duration is left out.
type Options struct {
	GenCPU, LBCPU string // CPUs of the load generator and of the proxies ("0", "1")
	Conns         int    // wrk connections of the closed loop
	ScaleDuration string // seconds per scaling run, e.g. "5s"
	// Context is markdown printed after the targets section: when and where
	// the run was made (date, machine, versions, load average).
	Context string
}

func (o Options) withDefaults() Options {
	if o.GenCPU == "" {
		o.GenCPU = "0"
	}
	if o.LBCPU == "" {
		o.LBCPU = "1"
	}
	return o
}

// Write renders the whole report of one run as markdown: the targets table
// first, with a one-line summary, then the closed-loop, open-loop, paired,
// churn, two-thread, bulk and scaling tables, and last the targets table over
// every load (rows.go). Only a failed write returns an error.
func Write(w io.Writer, raw Raw, o Options) error {
	o = o.withDefaults()
	b := bufio.NewWriter(w)
	r := &writer{b: b, raw: raw, o: o, targets: raw.mainTargets()}
	r.f("## Side-by-side benchmark\n")
	r.targetsSection()
	r.f("\n")
	if o.Context != "" {
		r.f("%s\n", strings.TrimRight(o.Context, "\n"))
	}
	r.f("Ratios in parentheses are to HAProxy (for req/s higher is better; for latency and CPU lower is better).\n")
	r.f("\"CPU %s busy\" is the load generator's and backends' CPU (all processes on it): near 100 %% means the generator, not the proxy, limited the run.\n", o.GenCPU)
	r.closed()
	r.open()
	r.paired()
	r.notes()
	r.extra()
	r.scaling()
	r.rowsSection()
	return b.Flush()
}

type writer struct {
	b       *bufio.Writer
	raw     Raw
	o       Options
	targets []string
}

func (r *writer) f(format string, a ...any) { fmt.Fprintf(r.b, format, a...) }

// mainTargets is the compared targets (direct, the proxies, the control) in
// the order of the first closed-loop round, which runs them in run.sh's order;
// without closed-loop lines, those of the open loop that are not scaling or
// profiling runs.
func (raw Raw) mainTargets() []string {
	if t := raw.Targets("closed"); len(t) > 0 {
		return t
	}
	var out []string
	for _, t := range raw.Targets("open") {
		if !scaleTarget.MatchString(t) && !strings.HasSuffix(t, "-profiled") {
			out = append(out, t)
		}
	}
	return out
}

var scaleTarget = regexp.MustCompile(`^kelpie-(\d+)-(\w+)$`)

// num formats a measured value as the tables do: whole numbers from 100 up,
// one decimal below; "-" when missing.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func xs(v []float64, sep string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2fx", x)
	}
	return strings.Join(s, sep)
}

// runsN is "1 run" or "N runs".
func runsN(n int) string {
	if n == 1 {
		return "1 run"
	}
	return strconv.Itoa(n) + " runs"
}

// runs is how many distinct runs load has, counting only the given targets
// when there are any (the open loop's scaling runs have their own count).
func (raw Raw) runs(load string, targets ...string) int {
	var seen []int
	for _, l := range raw {
		if l.Load == load && (len(targets) == 0 || slices.Contains(targets, l.Target)) && !slices.Contains(seen, l.Run) {
			seen = append(seen, l.Run)
		}
	}
	return len(seen)
}

// TargetRow is one line of the targets table.
type TargetRow struct {
	Name    string  // short name for the summary line
	Target  string  // what is promised
	Kelpie  float64 // kelpie's median per-run ratio to HAProxy
	Control float64 // the control's, NaN without one
	Verdict Verdict
}

// TargetRows judges kelpie against its three targets from one run's raw
// lines; rows without data are left out (nil when kelpie or HAProxy is
// missing).
func TargetRows(raw Raw) []TargetRow {
	var rows []TargetRow
	ctl := func(load, key string) float64 { return raw.Ratios(load, Control, key).Median }
	if c := raw.Ratios("closed", Kelpie, "cpu_us_req"); c.N() > 0 {
		cc := ctl("closed", "cpu_us_req")
		rows = append(rows, TargetRow{"CPU per request",
			fmt.Sprintf("CPU per request at saturation at most %.1fx HAProxy's (wrk, %s)", MaxCPURatio, runsN(c.N())),
			c.Median, cc, CPUVerdict(c.Median, cc)})
	}
	if c := raw.Ratios("closed", Kelpie, "rps"); c.N() > 0 {
		cc := ctl("closed", "rps")
		rows = append(rows, TargetRow{"requests/s",
			fmt.Sprintf("requests/s at least %.1fx HAProxy's (wrk, %s)", MinRPSRatio, runsN(c.N())),
			c.Median, cc, RPSVerdict(c.Median, cc)})
	}
	if c := raw.Ratios("pair-"+Kelpie, Kelpie, "p99_us"); c.N() > 0 {
		rows = append(rows, TargetRow{"p99",
			fmt.Sprintf("p99 no worse than HAProxy's at the same offered rate (paired, %s)", runsN(c.N())),
			c.Median, ctl("pair-"+Control, "p99_us"), P99Verdict(c.Median, c.Geo)})
	}
	return rows
}

// Summary is the one line that says whether each target holds.
func Summary(rows []TargetRow) string {
	if len(rows) == 0 {
		return "No targets checked: the run needs kelpie and HAProxy side by side."
	}
	parts := make([]string, len(rows))
	all := true
	for i, row := range rows {
		parts[i] = row.Name + " " + row.Verdict.Short
		all = all && row.Verdict.OK
	}
	lead := "Targets"
	if all && len(rows) == 3 { // "not measurably worse" does not count as holding
		lead = "All three targets hold"
	}
	return fmt.Sprintf("**%s:** %s.", lead, strings.Join(parts, "; "))
}

func ratioCell(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.3fx", v)
}

func (r *writer) targetsSection() {
	r.f("\n### kelpie against its targets\n\n")
	rows := TargetRows(r.raw)
	r.f("%s\n", Summary(rows))
	if len(rows) == 0 {
		return
	}
	r.f("\nEach ratio is the median over the runs of kelpie's value over HAProxy's in the same run (exact; the generator's latency histogram has steps of 0.4-0.8 %%). The control is a second, identical HAProxy measured the same way: how far from 1 two equal proxies land in this run.\n\n")
	r.f("| target | kelpie | control | holds |\n|---|---|---|---|\n")
	for _, row := range rows {
		r.f("| %s | %s | %s | %s |\n", row.Target, ratioCell(row.Kelpie), ratioCell(row.Control), row.Verdict.Holds)
	}
	r.f("\nA few paired runs resolve only a few per cent, and the control moves as much; `go run ./bench/cmd/report pool FILE...` pools the paired runs of several latest.raw.txt files (keep each run's, e.g. in bench/runs/) for a narrower interval.\n")
}

var tableKeys = []string{"rps", "p50_us", "p99_us", "p999_us", "cpu_us_req", "cpu_pct", "gen_busy"}

// noRatio is the columns shown without a ratio to HAProxy.
var noRatio = map[string]bool{"cpu_pct": true, "gen_busy": true, "lag_p99_us": true}

func (r *writer) table(load, title string) {
	keys := slices.Clone(tableKeys)
	head := fmt.Sprintf("| target | req/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | proxy CPU %% | CPU %s busy %%", r.o.GenCPU)
	rule := "|---|---:|---:|---:|---:|---:|---:|---:"
	if load == "open" {
		keys = append(keys, "lag_p99_us")
		head += " | generator lag p99 µs"
		rule += "|---:"
	}
	r.f("\n### %s\n\n%s |\n%s|\n", title, head, rule)
	for _, t := range r.targets {
		row := "| " + t
		for _, k := range keys {
			v := r.raw.Median(load, t, k)
			row += " | " + num(v)
			if b := r.raw.Median(load, Base, k); t != Direct && !noRatio[k] && !math.IsNaN(v) && b != 0 && !math.IsNaN(b) {
				row += fmt.Sprintf(" (%.2fx)", v/b)
			}
		}
		r.f("%s |\n", row)
	}
}

// others is the compared proxies other than the base and direct.
func (r *writer) others() []string {
	var out []string
	for _, t := range r.targets {
		if t != Direct && t != Base {
			out = append(out, t)
		}
	}
	return out
}

func (r *writer) closed() {
	if len(r.raw.Targets("closed")) == 0 {
		return
	}
	conns := ""
	if r.o.Conns > 0 {
		conns = fmt.Sprintf(" -c%d", r.o.Conns)
	}
	r.table("closed", "Closed loop: wrk -t1"+conns)
	for _, t := range r.others() {
		c := r.raw.Ratios("closed", t, "cpu_us_req")
		if c.N() == 0 {
			continue
		}
		q := r.raw.Ratios("closed", t, "rps")
		r.f("\n%s over HAProxy in the same round, median: CPU per request %.2fx (runs: %s); req/s %.2fx (runs: %s).\n",
			t, c.Median, xs(c.Runs, ", "), q.Median, xs(q.Runs, ", "))
	}
}

func (r *writer) open() {
	if len(r.targets) == 0 || len(r.raw.Values("open", r.targets[0], "rps")) == 0 {
		return
	}
	rate := r.raw.Median("open", r.targets[0], "rate")
	r.table("open", fmt.Sprintf("Open loop: %s req/s fixed rate, latency from the intended send time (medians of %s)", num(rate), runsN(r.raw.runs("open", r.targets...))))
	for _, t := range r.others() {
		p := r.raw.Ratios("open", t, "p99_us")
		if p.N() == 0 {
			continue
		}
		r.f("\n%s open-loop p99 over HAProxy's in the same round, median: %.2fx (runs: %s; at or below HAProxy in %d of %d).\n",
			t, p.Median, xs(p.Runs, ", "), p.AtOrBelow, p.N())
	}
}

func pairCell(q Ratios) string {
	if q.N() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx (%.2f-%.2f), %d of %d", q.Median, q.Low, q.High, q.AtOrBelow, q.N())
}

func (r *writer) paired() {
	loads := r.raw.Loads("pair-")
	if len(loads) == 0 {
		return
	}
	var rate []float64
	for _, l := range loads {
		rate = append(rate, r.raw.Values(l, Base, "rate")...)
	}
	runs := 0
	for _, l := range loads {
		runs = max(runs, r.raw.runs(l))
	}
	r.f("\n### Paired open loop: each proxy beside HAProxy, one generator, %s req/s each at the same time (medians of %s)\n\n", num(NewRatios(rate).Median), runsN(runs))
	r.f("Each cell: the proxy's value over HAProxy's in the same run, median (lowest-highest), and in how many runs it was at or below HAProxy's.\n\n")
	r.f("| proxy | its p50 µs | its p99 µs | p50 ratio | p99 ratio | p99.9 ratio | CPU µs/req ratio |\n|---|---:|---:|---|---|---|---|\n")
	for _, load := range loads {
		t := strings.TrimPrefix(load, "pair-")
		name := t
		if t == Control {
			name = "haproxy-b (control: a second HAProxy)"
		}
		r.f("| %s | %s | %s | %s | %s | %s | %s |\n", name,
			num(r.raw.Median(load, t, "p50_us")), num(r.raw.Median(load, t, "p99_us")),
			pairCell(r.raw.Ratios(load, t, "p50_us")), pairCell(r.raw.Ratios(load, t, "p99_us")),
			pairCell(r.raw.Ratios(load, t, "p999_us")), pairCell(r.raw.Ratios(load, t, "cpu_us_req")))
	}
}

// notes: what the generator's lag means, the worst steal, and runs where
// the generator fell behind.
func (r *writer) notes() {
	r.f("\n\"Generator lag\" is how late the load generator itself sent (its CPU is shared with the backends); when it is near the p99, the run measured the generator more than the proxy.\n")
	var n, late int
	var gen, lb float64
	for _, l := range r.raw {
		if l.Load != "open" && !strings.HasPrefix(l.Load, "pair-") {
			continue
		}
		n++
		if v, ok := l.Value("steal_gen"); ok {
			gen = max(gen, v)
		}
		if v, ok := l.Value("steal_lb"); ok {
			lb = max(lb, v)
		}
		if s, ok := l.Fields["late"]; ok && s != "0" {
			late++
		}
	}
	if n > 0 {
		r.f("\nHost steal time (the hypervisor running other work on these CPUs), worst open-loop or paired run: CPU %s %.1f %%, CPU %s %.1f %% (per run in latest.raw.txt).\n", r.o.GenCPU, gen, r.o.LBCPU, lb)
	}
	if late > 0 {
		r.f("\n**Warning:** in %d open-loop runs the generator fell behind its schedule (late > 0 in latest.raw.txt); their latencies measure the generator, not the proxy.\n", late)
	}
}

func (r *writer) scaling() {
	var cells []string
	for _, t := range r.raw.Targets("open") {
		if scaleTarget.MatchString(t) {
			cells = append(cells, t)
		}
	}
	if len(cells) == 0 {
		return
	}
	dur := ""
	if r.o.ScaleDuration != "" {
		dur = ", " + r.o.ScaleDuration
	}
	runs := 0
	for _, t := range cells {
		runs = max(runs, len(r.raw.Values("open", t, "rps")))
	}
	r.f("\n### kelpie by pool size and algorithm (open loop, %s req/s%s, median of %d)\n\n", num(r.raw.Median("open", cells[0], "rate")), dur, runs)
	r.f("| backends | algorithm | CPU µs/req | CPU %% | p50 µs | p99 µs | p99.9 µs | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, t := range cells {
		m := scaleTarget.FindStringSubmatch(t)
		row := fmt.Sprintf("| %s | %s", m[1], m[2])
		for _, k := range []string{"cpu_us_req", "cpu_pct", "p50_us", "p99_us", "p999_us"} {
			row += " | " + num(r.raw.Median("open", t, k))
		}
		errs := r.raw.Median("open", t, "errors")
		e := "-"
		if !math.IsNaN(errs) {
			e = strconv.FormatFloat(errs, 'f', -1, 64)
		}
		r.f("%s | %s |\n", row, e)
	}
}
