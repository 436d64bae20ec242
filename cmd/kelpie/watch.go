package main

import (
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// watchInterval is how often `run -watch` reads the config file. A change
// is applied once the new content has been read twice in a row unchanged,
// so a change is applied within two intervals and a file caught half
// written is not.
const watchInterval = 500 * time.Millisecond

// configWatch notices when a config file's content changes. It reads the
// file by path on every poll rather than watching an inode, because the
// file is usually replaced, not written in place: editors rename a new file
// over it, and Kubernetes swaps the ..data symlink of a ConfigMap volume.
// A poll also works on bind mounts and network filesystems where inotify
// events never arrive. Not safe for concurrent use: one goroutine polls.
type configWatch struct {
	path    string
	applied [sha256.Size]byte // the content last applied (or seen at start)
	pending [sha256.Size]byte // a different content seen on the last poll
	hasPend bool
}

// newConfigWatch starts from the file's current content, which the running
// config was loaded from.
func newConfigWatch(path string) *configWatch {
	w := &configWatch{path: path}
	if data, err := os.ReadFile(path); err == nil {
		w.applied = sha256.Sum256(data)
	}
	return w
}

// step reads the file once and reports whether a reload is due: the
// content differs from the applied one and equals what the previous step
// saw. A missing or unreadable file (mid-swap) is no change. Once step
// reports true, that content counts as applied whether or not the reload
// accepts it: a rejected file is not retried until it changes again, the
// same as one SIGHUP.
func (w *configWatch) step() bool {
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.hasPend = false
		return false
	}
	sum := sha256.Sum256(data)
	switch {
	case sum == w.applied:
		w.hasPend = false
		return false
	case w.hasPend && sum == w.pending:
		w.applied, w.hasPend = sum, false
		return true
	default:
		w.pending, w.hasPend = sum, true
		return false
	}
}

// watchConfig calls reload whenever w reports a change, polling every
// interval until ctx ends.
func watchConfig(ctx context.Context, w *configWatch, interval time.Duration, reload func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if w.step() {
				reload()
			}
		}
	}
}
