// Package stats holds the statistics behind the side-by-side benchmark's
// verdicts (bench/run.sh, bench/cmd/report): medians, the geometric mean of
// ratios with its Student-t interval, Student-t quantiles and the
// Mann-Whitney test. Functions are pure and safe for concurrent use.
package stats

import (
	"math"
	"slices"
)

// Median is the middle of v, or the mean of the two middle values when len(v)
// is even; NaN when v is empty. v is not modified.
func Median(v []float64) float64 {
	n := len(v)
	if n == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Interval is a point estimate with its confidence interval.
type Interval struct {
	Mean, Low, High float64
}

// Contains reports whether x lies in [Low, High].
func (iv Interval) Contains(x float64) bool { return iv.Low <= x && x <= iv.High }

// GeoMean is the geometric mean of v (all > 0) with its two-sided 95 %
// interval: a Student-t interval on the mean of the logarithms, taken back
// with exp. Ratios are symmetric on a log scale (2x and 0.5x are equally far
// from 1), which is why ratios are averaged this way. One value has no
// interval: it is 0 to +Inf (t with 0 degrees of freedom); none gives NaN.
func GeoMean(v []float64) Interval {
	n := len(v)
	if n == 0 {
		nan := math.NaN()
		return Interval{nan, nan, nan}
	}
	var m float64
	for _, x := range v {
		m += math.Log(x)
	}
	m /= float64(n)
	if n == 1 {
		return Interval{math.Exp(m), 0, math.Inf(1)}
	}
	var ss float64
	for _, x := range v {
		d := math.Log(x) - m
		ss += d * d
	}
	se := math.Sqrt(ss / float64(n-1) / float64(n))
	h := T975(n-1) * se
	return Interval{math.Exp(m), math.Exp(m - h), math.Exp(m + h)}
}

// T975 is the 0.975 quantile of Student's t with df degrees of freedom: the
// factor of a two-sided 95 % interval. df < 1 gives NaN.
func T975(df int) float64 { return TQuantile(0.975, float64(df)) }

// TQuantile is the p quantile (0 < p < 1) of Student's t distribution with
// df > 0 degrees of freedom, found by bisection on TCDF to full precision.
func TQuantile(p, df float64) float64 {
	if !(p > 0 && p < 1) || !(df > 0) {
		return math.NaN()
	}
	if p < 0.5 {
		return -TQuantile(1-p, df)
	}
	if p == 0.5 {
		return 0
	}
	lo, hi := 0.0, 1.0
	for TCDF(hi, df) < p {
		lo, hi = hi, hi*2
	}
	for range 200 {
		mid := (lo + hi) / 2
		if mid == lo || mid == hi {
			break
		}
		if TCDF(mid, df) < p {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// TCDF is P(T <= t) for Student's t with df > 0 degrees of freedom, from the
// regularized incomplete beta function: P(|T| > t) = I_{df/(df+t²)}(df/2, 1/2).
func TCDF(t, df float64) float64 {
	tail := 0.5 * betaInc(df/2, 0.5, df/(df+t*t))
	if t >= 0 {
		return 1 - tail
	}
	return tail
}

// betaInc is the regularized incomplete beta function I_x(a, b), by the
// continued fraction of Numerical Recipes (betacf, modified Lentz), using the
// symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
func betaInc(a, b, x float64) float64 {
	switch {
	case x <= 0:
		return 0
	case x >= 1:
		return 1
	}
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	front := math.Exp(lab - la - lb + a*math.Log(x) + b*math.Log1p(-x))
	if x < (a+1)/(a+b+2) {
		return front * betaCF(a, b, x) / a
	}
	return 1 - front*betaCF(b, a, 1-x)/b
}

func betaCF(a, b, x float64) float64 {
	const tiny = 1e-300
	c, d := 1.0, 1-(a+b)*x/(a+1)
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	h := d
	for m := 1; m <= 1000; m++ {
		fm := float64(m)
		// Even step.
		aa := fm * (b - fm) * x / ((a + 2*fm - 1) * (a + 2*fm))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		h *= d * c
		// Odd step.
		aa = -(a + fm) * (a + b + fm) * x / ((a + 2*fm) * (a + 2*fm + 1))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-16 {
			break
		}
	}
	return h
}

// MannWhitneyZ is the normal approximation of the Mann-Whitney U test for
// "a tends to be lower than b": U counts the pairs (x in a, y in b) with
// x < y, ties as one half, and z = (U - n1·n2/2) / sqrt(n1·n2·(n1+n2+1)/12)
// (no tie correction, as bench/pool.py had it). z > 0 means a's values are
// lower; |z| > 1.96 is significant at 5 %. NaN when either is empty.
func MannWhitneyZ(a, b []float64) float64 {
	n1, n2 := float64(len(a)), float64(len(b))
	if n1 == 0 || n2 == 0 {
		return math.NaN()
	}
	var u float64
	for _, x := range a {
		for _, y := range b {
			switch {
			case x < y:
				u++
			case x == y:
				u += 0.5
			}
		}
	}
	return (u - n1*n2/2) / math.Sqrt(n1*n2*(n1+n2+1)/12)
}
