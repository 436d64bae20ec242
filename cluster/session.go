// The Elector's session: the check it is tied to, the passes and renewals
// that confirm the lease, and the clean-up.

package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// newSession registers (or re-registers) the check, passes it, and creates
// a session tied to that check alone: not to serfHealth, whose failure
// could end the session before the leader's clock says so.
func (e *Elector) newSession(ctx context.Context) (string, time.Time, error) {
	o := e.o
	cctx, cancel := context.WithTimeout(ctx, o.CheckTTL)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(cctx)
	// A session of an earlier run of this instance is tied to the same
	// check ID; registering the check passes it again and would keep that
	// session, and the lock it may hold, alive. End those sessions first.
	sessions, _, err := o.Client.Session().List(q)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("list sessions: %w", err)
	}
	for _, s := range sessions {
		if s.Name == e.sessionName() {
			if _, err := o.Client.Session().Destroy(s.ID, (&api.WriteOptions{}).WithContext(cctx)); err != nil {
				return "", time.Time{}, fmt.Errorf("destroy stale session %s: %w", s.ID, err)
			}
			e.log.Info("ha: ended a session of an earlier run", "session", s.ID)
		}
	}
	err = o.Client.Agent().CheckRegisterOpts(&api.AgentCheckRegistration{
		ID: e.checkID, Name: "kelpie ha heartbeat " + o.ID,
		AgentServiceCheck: api.AgentServiceCheck{TTL: o.CheckTTL.String(), Status: api.HealthPassing,
			Notes: "passed by kelpie every check TTL/4; the HA session dies with it"},
	}, q)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("register check %s: %w", e.checkID, err)
	}
	// Re-registering keeps the status an existing check has (Consul's
	// agent does so against flapping): the check of a run that was killed,
	// or of this run after it was cut off, stays critical, and Consul
	// refuses a session tied to a critical check. Pass it explicitly.
	if err := o.Client.Agent().UpdateTTLOpts(e.checkID, "", api.HealthPassing, q); err != nil {
		return "", time.Time{}, fmt.Errorf("pass check %s: %w", e.checkID, err)
	}
	sent := o.Now()
	id, _, err := o.Client.Session().Create(&api.SessionEntry{
		Name:       e.sessionName(),
		NodeChecks: []string{e.checkID},
		TTL:        o.SessionTTL.String(),
		LockDelay:  o.LockDelay,
		Behavior:   api.SessionBehaviorRelease,
	}, (&api.WriteOptions{}).WithContext(cctx))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("create session for %s: %w", o.Key, err)
	}
	return id, sent, nil
}

func (e *Elector) sessionName() string { return "kelpie-ha " + e.o.ID }

// beat passes the check every CheckTTL/4, reporting each confirmation
// with its send time. Renewals run on their own loop (renew): a renewal
// stuck while Consul has no leader must not delay the agent-local passes.
func (e *Elector) beat(ctx context.Context, gen int, out chan<- event) {
	o := e.o
	every(ctx, o.CheckTTL/4, func() bool {
		rctx, cancel := context.WithTimeout(ctx, o.CheckTTL/2)
		sent := o.Now()
		err := o.Client.Agent().UpdateTTLOpts(e.checkID, "", api.HealthPassing, (&api.QueryOptions{}).WithContext(rctx))
		cancel()
		switch {
		case err == nil:
			send(ctx, out, event{kind: evCheckPassed, gen: gen, sent: sent})
		case ctx.Err() != nil:
		case isCheckUnknown(err):
			// The agent lost the check (restarted): the session went with it.
			send(ctx, out, event{kind: evSessionGone, gen: gen})
			return false
		default:
			e.log.Debug("ha: check pass failed", "check", e.checkID, "err", err)
		}
		return true
	})
}

// renew renews the session every SessionTTL/4, reporting each confirmation
// with its send time, or that Consul no longer knows the session.
func (e *Elector) renew(ctx context.Context, gen int, session string, out chan<- event) {
	o := e.o
	every(ctx, o.SessionTTL/4, func() bool {
		rctx, cancel := context.WithTimeout(ctx, o.SessionTTL/4)
		sent := o.Now()
		entry, _, err := o.Client.Session().Renew(session, (&api.WriteOptions{}).WithContext(rctx))
		cancel()
		switch {
		case err == nil && entry == nil:
			send(ctx, out, event{kind: evSessionGone, gen: gen})
			return false
		case err == nil:
			send(ctx, out, event{kind: evSessionRenewed, gen: gen, sent: sent})
		case ctx.Err() == nil:
			e.log.Debug("ha: session renewal failed", "err", err)
		}
		return true
	})
}

// every runs step every d until ctx ends or step returns false.
func every(ctx context.Context, d time.Duration, step func() bool) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !step() {
			return
		}
	}
}

func isCheckUnknown(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == 404 || (se.Code == 500 && strings.Contains(se.Body, "does not have associated TTL"))
	}
	return strings.Contains(err.Error(), "does not have associated TTL") || strings.Contains(err.Error(), "Unknown check")
}

// destroy ends a session that is no longer used, best effort.
func (e *Elector) destroy(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := e.o.Client.Session().Destroy(id, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		e.log.Debug("ha: destroy session", "session", id, "err", err)
	}
}

// release gives the lock up, bounded by a few seconds; a failure leaves
// the lock to the session's end.
func (e *Elector) release(session string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, _, err := e.o.Client.KV().Release(&api.KVPair{Key: e.o.Key, Session: session}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		e.log.Warn("ha: release lock", "key", e.o.Key, "err", err)
	}
}

// shutdown releases what Run holds in Consul, each step bounded.
func (e *Elector) shutdown(session string, wasLeader bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w := (&api.WriteOptions{}).WithContext(ctx)
	if session != "" {
		// The candidate key first: a member yielding to this one must see it
		// gone before it sees the lock free.
		if _, err := e.o.Client.KV().Delete(e.candidates()+e.o.ID, w); err != nil {
			e.log.Debug("ha: delete candidate key", "err", err)
		}
		if wasLeader {
			e.release(session)
		}
		if _, err := e.o.Client.Session().Destroy(session, w); err != nil {
			e.log.Warn("ha: destroy session", "err", err)
		}
	}
	if err := e.o.Client.Agent().CheckDeregisterOpts(e.checkID, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		e.log.Debug("ha: deregister check", "check", e.checkID, "err", err)
	}
}
