package admin

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints upstreams as the aligned table of `kelpie backends`:
// one line per backend.
func WriteTable(w io.Writer, resp UpstreamsResponse) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tBACKEND\tELIGIBLE\tHEALTH\tBREAKER\tADMIN\tWEIGHT\tIN-FLIGHT\tREQUESTS\tFAILURES\tSOURCE\tDOWN")
	for _, u := range resp.Upstreams {
		if len(u.Backends) == 0 {
			fmt.Fprintf(tw, "%s\t-\t\t\t\t\t\t\t\t\t\t\n", u.Name)
		}
		for _, b := range u.Backends {
			source := b.Source
			if b.Backup {
				source += ",backup"
			}
			adm := b.Admin
			if b.Drain != nil && b.Drain.Scope == ScopeFleet {
				adm += "(fleet)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n",
				u.Name, b.Address, yesNo(b.Eligible), b.Health, b.Breaker, adm,
				b.Weight, b.InFlight, b.Requests, b.Failures, dash(source), dash(strings.Join(b.Down, ",")))
		}
	}
	return tw.Flush()
}

// WriteBackend prints one backend's state after a drain, ready or weight
// call, as one line.
func WriteBackend(w io.Writer, upstream string, b Backend) error {
	_, err := fmt.Fprintf(w, "%s %s: admin=%s eligible=%s in_flight=%d weight=%d",
		upstream, b.Address, b.Admin, yesNo(b.Eligible), b.InFlight, b.Weight)
	if err == nil && b.Drain != nil {
		_, err = fmt.Fprintf(w, " scope=%s by=%q reason=%q", b.Drain.Scope, b.Drain.By, b.Drain.Reason)
	}
	if err == nil {
		_, err = fmt.Fprintln(w)
	}
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
