package testkit

import (
	"testing"
	"time"
)

// pollEvery is how often Eventually checks its condition.
const pollEvery = 5 * time.Millisecond

// Eventually polls cond until it holds, failing t with what if it does not
// within timeout. It is for end-to-end tests where the fact is observed over
// real sockets and no event exists to wait on; where one does (a channel,
// a pool's Changed, LogBuffer.WaitFor), wait on that instead.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pollEvery)
	}
}
