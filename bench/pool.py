#!/usr/bin/env python3
"""Pool the paired open-loop runs of several benchmark runs.

    python3 bench/pool.py bench/runs/2026-11-23/*.raw.txt

Each paired run gives one ratio per proxy: its p99 over HAProxy's in the same
run (both under one generator). Five of them per benchmark run are too few to
tell a 2 % difference from noise, so this pools every pair from the files
given and prints, per proxy (haproxy-b is the control, a second HAProxy):
how many pairs, how many at or below 1, the median, and the geometric mean
with a 95 % confidence interval (Student t on the log ratios).
Last, a Mann-Whitney test of each proxy's ratios against the control's: z > 0
means the proxy's ratios are lower, |z| > 1.96 is significant at 5 %.

Standard library only, so it runs wherever the benchmark does.
"""

import math
import sys


def pairs(paths, key="p99_us"):
    """{proxy: [ratio, ...]} over every paired run in the raw files."""
    out = {}
    for path in paths:
        base, other = {}, {}
        with open(path) as f:
            for line in f:
                fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                load = fields.get("load", "")
                if not load.startswith("pair-") or key not in fields:
                    continue
                proxy, run = load[len("pair-"):], fields["run"]
                if fields["target"] == "haproxy":
                    base[proxy, run] = float(fields[key])
                else:
                    other[proxy, run] = float(fields[key])
        for (proxy, run), v in other.items():
            b = base.get((proxy, run))
            if b:
                out.setdefault(proxy, []).append(v / b)
    return out


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# Two-sided 95 % Student t for 1..30 degrees of freedom; 1.96 beyond.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def geomean_ci(v):
    logs = [math.log(x) for x in v]
    n = len(logs)
    m = sum(logs) / n
    if n < 2:
        return math.exp(m), math.exp(m), math.exp(m)
    se = math.sqrt(sum((x - m) ** 2 for x in logs) / (n - 1) / n)
    t = T95[n - 2] if n - 1 <= len(T95) else 1.96
    return math.exp(m), math.exp(m - t * se), math.exp(m + t * se)


def mann_whitney_z(a, b):
    """z for 'a tends to be lower than b' (normal approximation)."""
    u = sum((x < y) + 0.5 * (x == y) for x in a for y in b)
    n1, n2 = len(a), len(b)
    return (u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    key = "p99_us"
    by = pairs(argv[1:], key)
    if not by:
        sys.exit("pool: no paired runs in " + " ".join(argv[1:]))
    control = by.get("haproxy-b")
    print(f"{key} over HAProxy's in the same paired run, pooled over {len(argv) - 1} files")
    print("| proxy | pairs | at or below 1 | median | geometric mean (95 % CI) | vs the control (Mann-Whitney z) |")
    print("|---|---:|---:|---:|---|---:|")
    for proxy in sorted(by, key=lambda p: (p != "haproxy-b", p)):
        v = by[proxy]
        g, lo, hi = geomean_ci(v)
        z = "-" if proxy == "haproxy-b" or not control else f"{mann_whitney_z(v, control):+.2f}"
        name = "haproxy-b (control)" if proxy == "haproxy-b" else proxy
        below = sum(x <= 1 for x in v)
        print(f"| {name} | {len(v)} | {below} | {median(v):.3f}x | {g:.3f}x ({lo:.3f}-{hi:.3f}) | {z} |")


if __name__ == "__main__":
    main(sys.argv)
