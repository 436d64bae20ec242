//go:build !linux

package cluster

import "errors"

var errVIPLinuxOnly = errors.New("vip: virtual IPs are only supported on Linux")

// Add is only supported on Linux.
func (v VIP) Add(garps int) error { return errVIPLinuxOnly }

// Remove is only supported on Linux.
func (v VIP) Remove() error { return errVIPLinuxOnly }
