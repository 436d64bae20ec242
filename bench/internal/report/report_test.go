package report

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/bench/internal/stats"
)

// runsDir holds seven committed benchmark runs (G-M): each run's raw lines
// and the table bench/run.sh (awk at the time) printed from them.
const runsDir = "../../runs/2026-11-23"

var runNames = []string{"G", "H", "I", "J", "K", "L", "M"}

func readRun(t *testing.T, name string) Raw {
	t.Helper()
	raw, err := ReadFile(filepath.Join(runsDir, name+".raw.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func parse(t *testing.T, text string) Raw {
	t.Helper()
	raw, err := Parse(strings.NewReader(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// The tables of every committed run, recomputed from its raw lines, match
// what the awk printed then, line for line: the closed-loop, open-loop,
// paired and scaling tables and the per-round ratio lines. (All those medians
// are over odd counts, 3 or 5, where the awk's median was right.) The targets
// tables are left out: the script's verdicts changed between runs.
func TestCommittedRunsReproduceTheirTables(t *testing.T) {
	for _, name := range runNames {
		var out bytes.Buffer
		if err := Write(&out, readRun(t, name), Options{Conns: 50, ScaleDuration: "5s"}); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, l := range strings.Split(out.String(), "\n") {
			got[l] = true
		}
		md, err := os.ReadFile(filepath.Join(runsDir, name+".md"))
		if err != nil {
			t.Fatal(err)
		}
		checked, inTargets := 0, false
		sc := bufio.NewScanner(bytes.NewReader(md))
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "### ") {
				inTargets = strings.Contains(l, "against its targets")
			}
			if inTargets || !(strings.HasPrefix(l, "|") || strings.Contains(l, "over HAProxy")) {
				continue
			}
			checked++
			if !got[l] {
				t.Errorf("run %s: recorded line not reproduced:\n%s", name, l)
			}
		}
		if checked < 30 {
			t.Errorf("run %s: only %d lines checked", name, checked)
		}
	}
}

// Run M's targets, as recorded in M.md and bench/README.md (CPU 1.047x,
// control 1.063x; req/s 0.994x, control 0.937x; paired p99 1.030x, control
// 1.000x), and its paired p99 interval, 0.981-1.059 (README: "M's, the
// highest").
func TestRunMTargets(t *testing.T) {
	rows := TargetRows(readRun(t, "M"))
	want := []struct {
		kelpie, control string
		holds           string
	}{
		{"1.047x", "1.063x", "yes"},
		{"0.994x", "0.937x", "yes"},
		{"1.030x", "1.000x", "not measurably worse: median 3.0 % above, geometric mean 1.019x, 95 % interval 0.981-1.059 includes 1"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d", len(rows), len(want))
	}
	for i, w := range want {
		r := rows[i]
		if ratioCell(r.Kelpie) != w.kelpie || ratioCell(r.Control) != w.control || r.Verdict.Holds != w.holds {
			t.Errorf("row %d (%s): %s, %s, %q; want %s, %s, %q", i, r.Name, ratioCell(r.Kelpie), ratioCell(r.Control), r.Verdict.Holds, w.kelpie, w.control, w.holds)
		}
	}
	const sum = "**Targets:** CPU per request holds; requests/s holds; p99 not measurably worse (the interval includes 1)."
	if got := Summary(rows); got != sum {
		t.Errorf("Summary = %q\nwant      %q", got, sum)
	}
}

// The pooled paired p99 over the seven committed runs, as bench/pool.py gave
// it (bench/README.md, README.md): the same pairs, counts, medians, geometric
// means and Mann-Whitney z. The intervals differ in the third decimal: with 35
// pairs (34 degrees of freedom) pool.py used t = 1.96, the normal quantile,
// where Student's t is 2.032. kelpie's interval 0.965-1.000 (top 0.9998)
// becomes 0.964-1.000 (top 1.0005): it now just includes 1.
func TestPooledCommittedRuns(t *testing.T) {
	var raws []Raw
	for _, name := range runNames {
		raws = append(raws, readRun(t, name))
	}
	by := PairRatios(raws, "p99_us")
	var out bytes.Buffer
	if err := WritePool(&out, by, "p99_us", len(raws)); err != nil {
		t.Fatal(err)
	}
	want := `p99_us over HAProxy's in the same paired run, pooled over 7 files

| proxy | pairs | at or below 1 | median | geometric mean (95 % CI) | vs the control (Mann-Whitney z) |
|---|---:|---:|---:|---|---:|
| haproxy-b (control) | 35 | 15 | 1.009x | 1.011x (0.996-1.025) | - |
| kelpie | 35 | 20 | 0.980x | 0.982x (0.964-1.000) | +2.09 |
| nginx | 35 | 33 | 0.965x | 0.958x (0.944-0.971) | +5.02 |

kelpie's p99 no worse than HAProxy's, over the 35 pooled pairs: yes.
`
	if out.String() != want {
		t.Errorf("pooled:\n%s\nwant:\n%s", out.String(), want)
	}
	k := NewRatios(by[Kelpie]).Geo
	if !(k.High > 1.0004 && k.High < 1.0006) || !(k.Low > 0.9639 && k.Low < 0.9640) {
		t.Errorf("kelpie's pooled interval = %.5f-%.5f, want 0.96394-1.00050", k.Low, k.High)
	}
	// Without M: 30 pairs, 29 degrees of freedom, inside pool.py's table, so
	// the recorded 0.976x (0.956-0.996) is unchanged.
	k = NewRatios(PairRatios(raws[:6], "p99_us")[Kelpie]).Geo
	if got := ratioCell(k.Mean) + " " + ratioCell(k.Low) + " " + ratioCell(k.High); got != "0.976x 0.956x 0.996x" {
		t.Errorf("without M: %s", got)
	}
}

func TestRatiosPairRunsAndSkipUnmeasured(t *testing.T) {
	raw := parse(t, `
load=closed target=haproxy run=1 cpu_us_req=10
load=closed target=kelpie run=1 cpu_us_req=11
load=closed target=kelpie run=2 cpu_us_req=12
load=closed target=haproxy run=3 cpu_us_req=0
load=closed target=kelpie run=3 cpu_us_req=5
load=closed target=haproxy run=4 cpu_us_req=10
load=closed target=kelpie run=4 cpu_us_req=-
load=closed target=kelpie run=6 cpu_us_req=9
load=closed target=haproxy run=6 cpu_us_req=10
load=closed target=haproxy run=5 cpu_us_req=10
load=closed target=kelpie run=5 cpu_us_req=13
load=open target=haproxy run=2 cpu_us_req=1
`)
	q := raw.Ratios("closed", "kelpie", "cpu_us_req")
	// Run 2 has no HAProxy line (the open one is another load), run 3's
	// HAProxy is 0, run 4's kelpie unmeasured; runs in run order.
	want := []float64{1.1, 1.3, 0.9}
	if len(q.Runs) != len(want) {
		t.Fatalf("ratios %v, want %v", q.Runs, want)
	}
	for i := range want {
		if math.Abs(q.Runs[i]-want[i]) > 1e-12 {
			t.Fatalf("ratios %v, want %v", q.Runs, want)
		}
	}
	if q.Median != 1.1 || q.Low != 0.9 || q.High != 1.3 || q.AtOrBelow != 1 {
		t.Errorf("summary %+v", q)
	}
}

// Even counts: the median of 4 per-run ratios is the mean of the middle two.
// run.sh's awk printed the lower one (1.00x here), which put a PAIR_RUNS=4 or
// RUNS=4 verdict on the better of the two middle runs.
func TestEvenRunCountMedian(t *testing.T) {
	raw := parse(t, `
load=pair-kelpie target=haproxy run=1 p99_us=100
load=pair-kelpie target=kelpie run=1 p99_us=100
load=pair-kelpie target=haproxy run=2 p99_us=100
load=pair-kelpie target=kelpie run=2 p99_us=104
load=pair-kelpie target=haproxy run=3 p99_us=100
load=pair-kelpie target=kelpie run=3 p99_us=97
load=pair-kelpie target=haproxy run=4 p99_us=100
load=pair-kelpie target=kelpie run=4 p99_us=106
`)
	q := raw.Ratios("pair-kelpie", "kelpie", "p99_us")
	if math.Abs(q.Median-1.02) > 1e-12 {
		t.Errorf("median of 0.97, 1.00, 1.04, 1.06 = %v, want 1.02", q.Median)
	}
	rows := TargetRows(raw)
	if len(rows) != 1 || rows[0].Verdict.Holds[:20] != "not measurably worse" {
		t.Errorf("rows %+v: the even-count median 1.02 is above 1, its interval includes 1", rows)
	}
	if m := raw.Median("pair-kelpie", "kelpie", "p99_us"); m != 102 {
		t.Errorf("median of 100, 104, 97, 106 = %v, want 102", m)
	}
}

func TestVerdictBoundaries(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name string
		got  Verdict
		want string
	}{
		{"cpu at the limit", CPUVerdict(1.2, nan), "yes"},
		{"cpu just over", CPUVerdict(1.2001, nan), "no"},
		{"cpu over, control 1.0999", CPUVerdict(1.3, 1.0999), "no"},
		{"cpu over, control off by 1.1", CPUVerdict(1.3, 1.1), outlier},
		{"cpu at the limit, control off", CPUVerdict(1.2, 1.5), "yes"},
		{"rps at the limit", RPSVerdict(0.9, nan), "yes"},
		{"rps just under", RPSVerdict(0.8999, nan), "no"},
		{"rps under, control 0.9201", RPSVerdict(0.85, 0.9201), "no"},
		{"rps under, control off by 0.92", RPSVerdict(0.85, 0.92), outlier},
		{"p99 median at 1", P99Verdict(1.0, stats.Interval{Mean: 1.05, Low: 1.01, High: 1.09}), "yes"},
		{"p99 interval above 1", P99Verdict(1.001, stats.Interval{Mean: 1.02, Low: 1.0001, High: 1.04}),
			"no: worse (geometric mean 1.020x, 95 % interval 1.000-1.040, above 1)"},
		{"p99 interval from exactly 1", P99Verdict(1.03, stats.Interval{Mean: 1.02, Low: 1.0, High: 1.04}),
			"not measurably worse: median 3.0 % above, geometric mean 1.020x, 95 % interval 1.000-1.040 includes 1"},
		{"p99 one pair", P99Verdict(1.03, stats.GeoMean([]float64{1.03})),
			"not measurably worse: median 3.0 % above, geometric mean 1.030x, 95 % interval 0.000-+Inf includes 1"},
	} {
		if c.got.Holds != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got.Holds, c.want)
		}
		if c.got.OK != (c.want == "yes") {
			t.Errorf("%s: OK = %v", c.name, c.got.OK)
		}
	}
}

func TestSummary(t *testing.T) {
	yes3 := []TargetRow{{Name: "CPU per request", Verdict: yes}, {Name: "requests/s", Verdict: yes}, {Name: "p99", Verdict: yes}}
	if got := Summary(yes3); got != "**All three targets hold:** CPU per request holds; requests/s holds; p99 holds." {
		t.Error(got)
	}
	if got := Summary(yes3[:2]); got != "**Targets:** CPU per request holds; requests/s holds." {
		t.Error(got)
	}
	mixed := []TargetRow{{Name: "CPU per request", Verdict: offControl}, {Name: "requests/s", Verdict: no}, {Name: "p99", Verdict: yes}}
	if got := Summary(mixed); got != "**Targets:** CPU per request unclear (the control is off as far); requests/s does not hold; p99 holds." {
		t.Error(got)
	}
	if got := Summary(nil); !strings.HasPrefix(got, "No targets checked") {
		t.Error(got)
	}
}

// The report leads with the targets: the summary line and the table come
// before any other table.
func TestReportLeadsWithTargets(t *testing.T) {
	var out bytes.Buffer
	if err := Write(&out, readRun(t, "L"), Options{Context: "`bench/run.sh` on a test day."}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	sum, tab, ctx, closed := strings.Index(s, "**Targets"), strings.Index(s, "| target | kelpie | control | holds |"), strings.Index(s, "on a test day"), strings.Index(s, "### Closed loop")
	if !(sum > 0 && sum < tab && tab < ctx && ctx < closed) {
		t.Errorf("order: summary %d, targets table %d, context %d, closed loop %d\n%s", sum, tab, ctx, closed, s)
	}
}

// The open loop's title counts its own runs, not the scaling cells' (which
// share load=open and may run more often).
func TestOpenRunCountIgnoresScaling(t *testing.T) {
	raw := parse(t, `
load=closed target=haproxy run=1 rps=10
load=open target=haproxy run=1 rate=100 rps=100 p99_us=5
load=open target=kelpie-3-round_robin run=1 rate=100 rps=100
load=open target=kelpie-3-round_robin run=2 rate=100 rps=100
load=open target=kelpie-3-round_robin run=3 rate=100 rps=100
`)
	var out bytes.Buffer
	if err := Write(&out, raw, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(medians of 1 run)", "median of 3)", "| 3 | round_robin |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in\n%s", want, out.String())
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, text := range []string{
		"load=closed target=x run=1 junk\n",
		"load=closed target=x run=one rps=1\n",
		"target=x run=1 rps=1\n",
	} {
		if _, err := Parse(strings.NewReader(text), "bad.raw.txt"); err == nil || !strings.Contains(err.Error(), "bad.raw.txt:1") {
			t.Errorf("Parse(%q) error = %v", text, err)
		}
	}
}

// bench/README.md and README.md: no run's paired p99 interval for kelpie lay
// above 1 (M's the highest, 0.981-1.059); the control's did once, in run I
// (1.003-1.042), so by the p99 rule a second HAProxy would have been "no:
// worse" there.
func TestPerRunP99Intervals(t *testing.T) {
	for _, name := range runNames {
		raw := readRun(t, name)
		k := raw.Ratios("pair-kelpie", Kelpie, "p99_us")
		c := raw.Ratios("pair-"+Control, Control, "p99_us")
		if k.Geo.Low > 1 {
			t.Errorf("run %s: kelpie's interval %.3f-%.3f lies above 1", name, k.Geo.Low, k.Geo.High)
		}
		ctl := P99Verdict(c.Median, c.Geo).Holds
		worse := strings.HasPrefix(ctl, "no: worse")
		if worse != (name == "I") {
			t.Errorf("run %s: control verdict %q", name, ctl)
		}
		if name == "I" && !strings.Contains(ctl, "1.003-1.042") {
			t.Errorf("run I: control verdict %q, want the interval 1.003-1.042", ctl)
		}
	}
}
