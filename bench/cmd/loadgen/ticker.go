package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ticker is a periodic timerfd read through the Go netpoller, so a goroutine
// waiting on it wakes within microseconds of each period.
type ticker struct{ f *os.File }

func newTicker(period time.Duration) (*ticker, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	ts := unix.NsecToTimespec(int64(period))
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	// A non-blocking fd makes os.NewFile register it with the netpoller.
	return &ticker{f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// wait blocks until at least one period has passed since the last wait.
func (t *ticker) wait() error {
	var b [8]byte // the number of expirations; unused
	_, err := t.f.Read(b[:])
	return err
}

// Close stops the timer.
func (t *ticker) Close() error { return t.f.Close() }
