//go:build !linux

package agent

import "errors"

// capsHeld: proxies' host ports are handed over on Linux only.
func capsHeld() error { return errors.New("host ports are handed to proxies on Linux only") }
