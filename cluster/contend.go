// The Elector's lock: taking it, watching it, and the preemption
// candidates.

package cluster

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

// contend tries to take the lock and, once held, watches it with
// consistent blocking queries. It reports the holder as it changes.
func (e *Elector) contend(ctx context.Context, gen int, session string, out chan<- event) {
	o := e.o
	kv := o.Client.KV()
	var index uint64
	holder, held, first := "", false, true
	for ctx.Err() == nil {
		wait := o.SessionTTL / 2
		if e.yield.Load() {
			wait = o.CheckTTL // in case a kick is missed: look again soon
		}
		rctx, cancel := context.WithTimeout(ctx, wait+o.CheckTTL)
		var kicked atomic.Bool
		go func() {
			select {
			case <-e.kick:
				kicked.Store(true)
				cancel()
			case <-rctx.Done():
			}
		}()
		pair, meta, err := kv.Get(o.Key, (&api.QueryOptions{RequireConsistent: true, WaitIndex: index, WaitTime: wait}).WithContext(rctx))
		cancel()
		if err != nil && kicked.Load() && ctx.Err() == nil {
			index = 0 // read the key now, without waiting for a change
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				e.log.Debug("ha: lock query failed", "key", o.Key, "err", err)
				pause(ctx, o.CheckTTL/4)
			}
			continue
		}
		if meta.LastIndex < index {
			index = 0 // the index went backwards (a new Consul): start over
		} else {
			index = meta.LastIndex
		}
		if index == 0 {
			index = 1
		}
		cur := ""
		if pair != nil && pair.Session != "" {
			var v lockValue
			if json.Unmarshal(pair.Value, &v) == nil {
				cur = v.ID
			}
		}
		ours := pair != nil && pair.Session == session
		if ours {
			send(ctx, out, event{kind: evAcquired, gen: gen, index: pair.LockIndex})
		} else if held || first {
			send(ctx, out, event{kind: evLost, gen: gen})
		}
		held, first = ours, false
		if cur != holder {
			holder = cur
			send(ctx, out, event{kind: evLeader, gen: gen, leader: cur})
		}
		if pair != nil && pair.Session != "" {
			continue // held (by us or another): wait for a change
		}
		// Free: try to take it; during a lock-delay Consul refuses, so
		// retry briefly until the delay ends or somebody else wins.
		for ctx.Err() == nil {
			if e.yield.Load() {
				break // a preferred member takes it
			}
			actx, cancel := context.WithTimeout(ctx, o.CheckTTL)
			ok, _, err := kv.Acquire(&api.KVPair{Key: o.Key, Value: e.value, Session: session}, (&api.WriteOptions{}).WithContext(actx))
			cancel()
			if err == nil && ok {
				index = 0 // read the LockIndex back at once
				break
			}
			if err != nil && ctx.Err() == nil {
				e.log.Debug("ha: lock acquire failed", "key", o.Key, "err", err)
			}
			cur, _, err := kv.Get(o.Key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
			if err == nil && cur != nil && cur.Session != "" {
				break // somebody won: go back to watching
			}
			pause(ctx, min(o.LockDelay/4, 100*time.Millisecond))
		}
	}
}

// watchCandidates announces this member under the candidates prefix, held
// by its session, and watches the others: it reports evYield when a live
// member with Preempt and a higher priority appears.
func (e *Elector) watchCandidates(ctx context.Context, gen int, session string, out chan<- event) {
	o := e.o
	kv := o.Client.KV()
	key := e.candidates() + o.ID
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, o.CheckTTL)
		ok, _, err := kv.Acquire(&api.KVPair{Key: key, Value: e.value, Session: session}, (&api.WriteOptions{}).WithContext(actx))
		cancel()
		if err == nil && ok {
			break
		}
		pause(ctx, o.CheckTTL/4)
	}
	var index uint64
	for ctx.Err() == nil {
		pairs, meta, err := kv.List(e.candidates(), (&api.QueryOptions{WaitIndex: index, WaitTime: o.SessionTTL / 2}).WithContext(ctx))
		if err != nil {
			pause(ctx, o.CheckTTL/4)
			continue
		}
		index = max(meta.LastIndex, 1)
		yield := false
		for _, p := range pairs {
			var v lockValue
			if p.Session == "" || p.Session == session || json.Unmarshal(p.Value, &v) != nil {
				continue
			}
			if v.Preempt && v.Priority > o.Priority {
				yield = true
			}
		}
		switch was := e.yield.Swap(yield); {
		case yield && !was:
			send(ctx, out, event{kind: evYield, gen: gen})
		case !yield && was:
			select {
			case e.kick <- struct{}{}:
			default:
			}
		}
	}
}

// send delivers ev unless ctx ends first.
func send(ctx context.Context, out chan<- event, ev event) {
	select {
	case out <- ev:
	case <-ctx.Done():
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
