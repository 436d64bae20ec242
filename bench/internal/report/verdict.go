package report

import (
	"fmt"
	"math"

	"github.com/kelpie-lb/kelpie/bench/internal/stats"
)

// kelpie's targets against HAProxy (issue 6), as per-run ratios to HAProxy's.
const (
	MaxCPURatio = 1.2 // CPU per request at saturation: at most 1.2x
	MinRPSRatio = 0.9 // requests/s at saturation: at least 0.9x
	MaxP99Ratio = 1.0 // p99 at the same offered rate: no worse

	// When kelpie misses the CPU or requests/s target and the control (a
	// second, identical HAProxy) is at least this far off too, the run's
	// HAProxy samples, not kelpie, are the likelier outlier.
	ControlCPUOff = 1.1
	ControlRPSOff = 0.92
)

// Verdict is whether one target holds: Holds is the table's cell, Short the
// word or two for the report's one-line summary.
type Verdict struct {
	Holds string
	Short string
	OK    bool // the target holds: the verdict is "yes"
}

const outlier = "no, but the control is off by as much: HAProxy's own samples are the outlier; rerun with more RUNS"

var (
	yes        = Verdict{Holds: "yes", Short: "holds", OK: true}
	no         = Verdict{Holds: "no", Short: "does not hold"}
	offControl = Verdict{Holds: outlier, Short: "unclear (the control is off as far)"}
)

// CPUVerdict judges kelpie's median CPU-per-request ratio: "yes" at or below
// MaxCPURatio; above it, "no" unless the control's ratio is at least
// ControlCPUOff (then the outlier verdict). control is NaN when there is no
// control.
func CPUVerdict(ratio, control float64) Verdict {
	switch {
	case ratio <= MaxCPURatio:
		return yes
	case control >= ControlCPUOff:
		return offControl
	}
	return no
}

// RPSVerdict judges kelpie's median requests/s ratio: "yes" at or above
// MinRPSRatio; below it, "no" unless the control's ratio is at most
// ControlRPSOff. control is NaN when there is no control.
func RPSVerdict(ratio, control float64) Verdict {
	switch {
	case ratio >= MinRPSRatio:
		return yes
	case control <= ControlRPSOff:
		return offControl
	}
	return no
}

// P99Verdict judges kelpie's paired p99 ratios: "yes" when their median is at
// or below 1; "no: worse" only when the geometric mean's whole 95 % interval
// lies above 1; otherwise "not measurably worse" (the interval includes 1).
func P99Verdict(median float64, geo stats.Interval) Verdict {
	switch {
	case median <= MaxP99Ratio:
		return yes
	case geo.Low > MaxP99Ratio:
		return Verdict{
			Holds: fmt.Sprintf("no: worse (geometric mean %.3fx, 95 %% interval %.3f-%.3f, above 1)", geo.Mean, geo.Low, geo.High),
			Short: "does not hold (worse, beyond the noise)",
		}
	}
	if math.IsNaN(geo.Low) || math.IsNaN(median) {
		return Verdict{Holds: "-", Short: "not measured"}
	}
	return Verdict{
		Holds: fmt.Sprintf("not measurably worse: median %.1f %% above, geometric mean %.3fx, 95 %% interval %.3f-%.3f includes 1",
			(median-1)*100, geo.Mean, geo.Low, geo.High),
		Short: "not measurably worse (the interval includes 1)",
	}
}
