package balancer

// DegradedDivisor divides the weight of a degraded backend (State.Degraded):
// one whose script check exits 1, a warning. It stays eligible with a
// quarter of its share.
const DegradedDivisor = 4

// SetCheckOutput records the output of b's last active check (up to 4 KiB
// of an exec check's stdout and stderr); "" clears it. Health is its writer.
func (b *Backend) SetCheckOutput(s string) {
	if s == "" {
		if b.checkOutput.Load() != nil {
			b.checkOutput.Store(nil)
		}
		return
	}
	b.checkOutput.Store(&s)
}

// CheckOutput returns the output of b's last active check, or "".
func (b *Backend) CheckOutput() string {
	if p := b.checkOutput.Load(); p != nil {
		return *p
	}
	return ""
}
