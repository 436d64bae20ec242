package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/kelpie-lb/kelpie/admin"
)

// drillPoll is how often `kelpie drill` reads the drill's report.
const drillPoll = 200 * time.Millisecond

// runDrill is `kelpie drill UPSTREAM ADDRESS`: start a failover drill, follow
// it to its end, print the timeline. Exit 0 when it succeeded, 1 otherwise.
// Ctrl-C aborts the drill (ending the fault) before exiting.
func runDrill(args []string, stdout, stderr io.Writer) int {
	fs, c, asJSON := clientFlags("drill", stderr)
	fault := fs.String("fault", "refuse", "the fault: refuse, blackhole, status=CODE or delay=DURATION")
	dur := fs.Duration("for", admin.DefaultDrillFor, "how long the fault lasts")
	minEligible := fs.Int("min-eligible", admin.DefaultDrillMinEligible, "refuse to start when fewer other backends are in rotation")
	maxErrs := fs.Int("max-client-errors", 0, "abort once more client-visible errors than this happened")
	detect := fs.Duration("detect-within", 0, "detection bound (default: derived from the upstream's health settings)")
	recover := fs.Duration("recover-within", admin.DefaultDrillRecoverWithin, "how long recovery may take after the fault ends")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: kelpie drill [-admin URL] [-token T] [-fault refuse|blackhole|status=503|delay=500ms] [-for 30s] [-min-eligible N] [-max-client-errors N] [-json] UPSTREAM ADDRESS")
		return 2
	}
	req := admin.DrillRequest{Fault: *fault, For: dur.String(), MinEligible: minEligible, MaxClientErrors: maxErrs,
		RecoverWithin: recover.String()}
	if *detect > 0 {
		req.DetectWithin = detect.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	id, err := c.StartDrill(ctx, fs.Arg(0), fs.Arg(1), req)
	cancel()
	if err != nil {
		return clientError(stderr, "drill", c, err)
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "drill %s started: fault %s on %s in %s for %s\n", id, *fault, fs.Arg(1), fs.Arg(0), *dur)
	}
	intr := make(chan os.Signal, 1)
	signal.Notify(intr, os.Interrupt)
	defer signal.Stop(intr)
	// The drill ends by itself within for + recover-within; the margin
	// covers polling and a slow admin API.
	deadline := time.Now().Add(*dur + *recover + time.Minute)
	tick := time.NewTicker(drillPoll)
	defer tick.Stop()
	for {
		select {
		case <-intr:
			ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
			err := c.AbortDrill(ctx, id)
			cancel()
			if err != nil {
				return clientError(stderr, "drill", c, err)
			}
			fmt.Fprintln(stderr, "kelpie drill: aborting")
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
		r, raw, err := c.Drill(ctx, id)
		cancel()
		if err != nil {
			return clientError(stderr, "drill", c, err)
		}
		if r.Outcome != admin.DrillRunning {
			if *asJSON {
				var v any
				if json.Unmarshal(raw, &v) == nil {
					stdout.Write(raw)
				}
			} else {
				admin.WriteDrill(stdout, r)
			}
			if r.Outcome == admin.DrillSucceeded {
				return 0
			}
			return 1
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "kelpie drill: drill %s still running after %s; see GET /api/v1/drills/%s\n", id, *dur+*recover+time.Minute, id)
			return 1
		}
	}
}
