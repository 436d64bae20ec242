package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The peers every row of the final table compares kelpie with.
const Nginx = "nginx"

// MaxIdleKB is issue 20's idle-connection target: at most 2 KB of RSS per
// idle keep-alive client connection.
const MaxIdleKB = 2.0

// Metric is one row of the targets table over every load: one raw key of one
// load, optionally narrowed to the lines where Where's key has its value
// (the idle rows: conns=10000 and conns=50000).
type Metric struct {
	Load, Key string
	Where     [2]string // key, value; zero: every line of the load (see selects)
	Label     string
	Lower     bool // lower is better (cpu_*, rss_*); otherwise higher (rps, mb_s, hs_per_s)
	// Goal, when set, is the issue's own target for this row, judged from
	// kelpie's value and its ratio to HAProxy's; Goal.Text says what it is.
	Goal *Goal
}

// Goal is a target the issue fixes for one row beyond "at or better than the
// best peer".
type Goal struct {
	Text  string
	Holds func(kelpie, toHAProxy float64) bool
}

var (
	atMostHAProxy = &Goal{"at most HAProxy's", func(_, h float64) bool { return h <= 1 }}
	idleGoal      = &Goal{fmt.Sprintf("at most %.0f KB", MaxIdleKB), func(k, _ float64) bool { return k <= MaxIdleKB }}
)

// Metrics is every row of the final targets table, in the order printed:
// bench/run.sh's own loads, then those the other scripts add (bench/README.md
// lists the agreed loads and keys). Rows without kelpie's value are shown as
// not measured.
var Metrics = []Metric{
	{Load: "closed", Key: "cpu_us_req", Label: "keep-alive: CPU µs per request (wrk, one thread)", Lower: true, Goal: atMostHAProxy},
	{Load: "closed", Key: "rps", Label: "keep-alive: requests/s (one thread)"},
	{Load: "pair", Key: "p99_us", Label: "keep-alive: p99 µs at the same offered rate (paired)", Lower: true, Goal: atMostHAProxy},
	{Load: "churn", Key: "cpu_us_req", Label: "churn (new connection per request): CPU µs per request", Lower: true, Goal: atMostHAProxy},
	{Load: "churn", Key: "rps", Label: "churn: requests/s"},
	{Load: "closed-2t", Key: "cpu_us_req", Label: "two threads: CPU µs per request", Lower: true},
	{Load: "closed-2t", Key: "rps", Label: "two threads: requests/s"},
	{Load: "scale-2t", Key: "cpu_us_req", Label: "two threads: CPU per request over one thread's", Lower: true},
	{Load: "bulk-up", Key: "cpu_s_per_gb", Label: "upload: CPU s per GB", Lower: true},
	{Load: "bulk-up", Key: "mb_s", Label: "upload: MB/s"},
	{Load: "bulk-down", Key: "cpu_s_per_gb", Label: "download: CPU s per GB", Lower: true},
	{Load: "bulk-down", Key: "mb_s", Label: "download: MB/s"},
	{Load: "idle", Key: "rss_kb_per_conn", Where: [2]string{"want", "10000"}, Label: "idle: RSS KB per connection, 10,000", Lower: true, Goal: idleGoal},
	{Load: "idle", Key: "rss_kb_per_conn", Where: [2]string{"want", "50000"}, Label: "idle: RSS KB per connection, 50,000", Lower: true, Goal: idleGoal},
	{Load: "tls-hs", Key: "hs_per_s", Label: "TLS: handshakes/s"},
	{Load: "tls-hs", Key: "cpu_us_hs", Label: "TLS: CPU µs per handshake", Lower: true},
	{Load: "tls-ka", Key: "cpu_us_req", Label: "TLS keep-alive: CPU µs per request", Lower: true},
	{Load: "tls-ka", Key: "rps", Label: "TLS keep-alive: requests/s"},
	{Load: "ws", Key: "mb_s", Label: "WebSocket: MB/s"},
	{Load: "ws", Key: "cpu_us_mb", Label: "WebSocket: CPU µs per MB", Lower: true},
	{Load: "ws", Key: "rss_kb_per_tunnel", Label: "WebSocket: RSS KB per tunnel", Lower: true},
}

// Row is one line of the final targets table: the three proxies' medians
// (NaN when not measured) and kelpie's ratios to each peer and to the better
// of the two.
type Row struct {
	Metric
	Kelpie, HAProxy, Nginx float64
	ToHAProxy, ToNginx     float64
	ToBest                 float64 // kelpie over the better peer; NaN without either
	Best                   string  // which peer is the better, "" without either
}

// Holds is whether kelpie is at or better than the best peer; false when not
// measured.
func (r Row) Holds() bool { return !math.IsNaN(r.ToBest) && r.better(r.ToBest) }

// GoalHolds is whether the issue's own target holds (ok false: the row has
// none, or kelpie was not measured).
func (r Row) GoalHolds() (holds, ok bool) {
	if r.Goal == nil || math.IsNaN(r.Kelpie) {
		return false, false
	}
	return r.Goal.Holds(r.Kelpie, r.ToHAProxy), true
}

func (r Row) better(ratio float64) bool {
	if r.Lower {
		return ratio <= 1
	}
	return ratio >= 1
}

// selects reports whether l is one of m's lines. The idle rows select on
// want, the count bench/idle.sh asked for (conns is the count it reached,
// lower where the descriptor limit is), and on conns in lines without want.
func (m Metric) selects(l Line) bool {
	k, v := m.Where[0], m.Where[1]
	if _, ok := l.Fields[k]; !ok && k == "want" {
		k = "conns"
	}
	return l.Fields[k] == v
}

// median is target's median of m's key, over the lines m selects.
func (raw Raw) median(m Metric, target string) float64 {
	if m.Where[0] == "" {
		return raw.Median(m.Load, target, m.Key)
	}
	var sel Raw
	for _, l := range raw {
		if m.selects(l) {
			sel = append(sel, l)
		}
	}
	return sel.Median(m.Load, target, m.Key)
}

// value is target's median for m. Two rows are derived: "pair" is each
// proxy's p99 in its own pairing with HAProxy, scaled to HAProxy's median p99
// over those pairings (HAProxy as measured beside kelpie and beside nginx),
// so the ratios are the paired ones; "scale-2t" is the two-thread CPU per
// request over the one-thread closed loop's.
func (raw Raw) value(m Metric, target string) float64 {
	switch m.Load {
	case "pair":
		if target == Base {
			return raw.Median("pair-"+Kelpie, Base, m.Key)
		}
		q := raw.Ratios("pair-"+target, target, m.Key)
		return q.Median * raw.Median("pair-"+Kelpie, Base, m.Key)
	case "scale-2t":
		return raw.Median("closed-2t", target, m.Key) / raw.Median("closed", target, m.Key)
	}
	return raw.median(m, target)
}

// Rows is the final targets table: one row per metric.
func Rows(raw Raw) []Row {
	rows := make([]Row, 0, len(Metrics))
	for _, m := range Metrics {
		r := Row{Metric: m, Kelpie: raw.value(m, Kelpie), HAProxy: raw.value(m, Base), Nginx: raw.value(m, Nginx)}
		r.ToHAProxy, r.ToNginx = r.Kelpie/r.HAProxy, r.Kelpie/r.Nginx
		if m.Load == "pair" { // the paired ratio itself, not one of two medians over another
			r.ToHAProxy = raw.Ratios("pair-"+Kelpie, Kelpie, m.Key).Median
		}
		r.ToBest, r.Best = math.NaN(), ""
		for _, p := range []struct {
			name  string
			ratio float64
		}{{Base, r.ToHAProxy}, {Nginx, r.ToNginx}} {
			if math.IsNaN(p.ratio) || math.IsInf(p.ratio, 0) {
				continue
			}
			// The better peer is the one kelpie compares worst with.
			if r.Best == "" || (m.Lower && p.ratio > r.ToBest) || (!m.Lower && p.ratio < r.ToBest) {
				r.ToBest, r.Best = p.ratio, p.name
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// RowsSummary is the line under the final table: how many measured rows are
// at or better than the best peer, and which of the issue's own targets hold.
func RowsSummary(rows []Row) string {
	var measured, held, goals, goalsHeld int
	var missed []string
	for _, r := range rows {
		if math.IsNaN(r.ToBest) {
			continue
		}
		measured++
		if r.Holds() {
			held++
		}
		if h, ok := r.GoalHolds(); ok {
			goals++
			if h {
				goalsHeld++
			} else {
				missed = append(missed, r.Label)
			}
		}
	}
	if measured == 0 {
		return "No rows measured with kelpie and a peer side by side."
	}
	s := fmt.Sprintf("**kelpie is at or better than the best peer in %d of %d measured rows; the issue's own targets hold in %d of %d", held, measured, goalsHeld, goals)
	if len(missed) > 0 {
		s += " (not: " + strings.Join(missed, "; ") + ")"
	}
	return s + ".**"
}

func cell(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return num(v)
}

func ratio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

// rowsSection prints the final targets table.
func (r *writer) rowsSection() {
	rows := Rows(r.raw)
	r.f("\n### Every row: kelpie against HAProxy and nginx\n\n")
	r.f("Medians of each load's runs; the ratios are kelpie's median over the peer's (the paired p99: the median of the per-run ratios). \"best\" is the better of HAProxy and nginx for that row; \"holds\" is kelpie at or better than it, and the issue's own target where it sets one.\n\n")
	r.f("| row | kelpie | HAProxy | nginx | kelpie / HAProxy | kelpie / nginx | kelpie / best | holds |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, row := range rows {
		holds := "not measured"
		if !math.IsNaN(row.ToBest) {
			holds = "no"
			if row.Holds() {
				holds = "yes"
			}
			holds += " (best: " + row.Best + ")"
		}
		if h, ok := row.GoalHolds(); ok {
			holds += "; " + row.Goal.Text + ": " + map[bool]string{true: "yes", false: "no"}[h]
		}
		r.f("| %s | %s | %s | %s | %s | %s | %s | %s |\n", row.Label, cell(row.Kelpie), cell(row.HAProxy), cell(row.Nginx),
			ratio(row.ToHAProxy), ratio(row.ToNginx), ratio(row.ToBest), holds)
	}
	r.f("\n%s\n", RowsSummary(rows))
}

// extraLoads is the tables of bench/run.sh's churn, two-thread and bulk
// loads: a title and the columns (key, heading), each with its ratio to
// HAProxy unless noRatio.
var extraLoads = []struct {
	load, title string
	keys        [][2]string
}{
	{"churn", "Connection churn: a new connection per request (wrk -H 'Connection: close')",
		[][2]string{{"rps", "req/s"}, {"cpu_us_req", "proxy CPU µs/req"}, {"cpu_pct", "proxy CPU %"}, {"gen_busy", "generator CPU busy %"}, {"errors", "errors"}}},
	{"closed-2t", "Two threads each (GOMAXPROCS=2, nbthread 2, two nginx workers; proxy, wrk -t2 and backends share both CPUs)",
		[][2]string{{"rps", "req/s"}, {"cpu_us_req", "proxy CPU µs/req"}, {"cpu_pct", "proxy CPU %"}}},
	{"bulk-up", "Upload: large request bodies through the proxy",
		[][2]string{{"mb_s", "MB/s"}, {"cpu_s_per_gb", "proxy CPU s/GB"}, {"cpu_pct", "proxy CPU %"}, {"errors", "errors"}}},
	{"bulk-down", "Download: large response bodies through the proxy",
		[][2]string{{"mb_s", "MB/s"}, {"cpu_s_per_gb", "proxy CPU s/GB"}, {"cpu_pct", "proxy CPU %"}, {"errors", "errors"}}},
}

func (r *writer) extra() {
	for _, x := range extraLoads {
		targets := r.raw.Targets(x.load)
		if len(targets) == 0 {
			continue
		}
		r.f("\n### %s (medians of %s)\n\n| target |", x.title, runsN(r.raw.runs(x.load)))
		for _, k := range x.keys {
			r.f(" %s |", k[1])
		}
		r.f("\n|---|%s\n", strings.Repeat("---:|", len(x.keys)))
		for _, t := range targets {
			r.f("| %s |", t)
			for _, k := range x.keys {
				v := r.raw.Median(x.load, t, k[0])
				if k[0] == "errors" && !math.IsNaN(v) {
					r.f(" %.0f", v)
				} else {
					r.f(" %s", cell(v))
				}
				if b := r.raw.Median(x.load, Base, k[0]); t != Direct && t != Base && !noRatio[k[0]] && k[0] != "errors" && b > 0 && !math.IsNaN(v) {
					r.f(" (%.2fx)", v/b)
				}
				r.f(" |")
			}
			r.f("\n")
		}
		if x.load == "closed-2t" {
			r.f("\nCPU per request with two threads over one (the closed loop above):")
			for _, t := range targets {
				r.f(" %s %s;", t, ratio(r.raw.value(Metric{Load: "scale-2t", Key: "cpu_us_req"}, t)))
			}
			r.f(" flat is 1.00x.\n")
		}
	}
}
