package proxy

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"
)

// Set makes new connections go to backends (round-robin), ends a hold and
// lets the held connections go to them, and forgets what names resolved
// to. Connections already forwarded stay where they are. It returns when
// the switch took effect.
func (p *Proxy) Set(backends []string) (time.Time, error) {
	if err := validBackends(backends); err != nil {
		return time.Time{}, err
	}
	p.mu.Lock()
	p.backends = slices.Clone(backends)
	p.next = 0
	p.names.forget("")
	p.switchedAt = time.Now()
	at := p.switchedAt
	held := 0
	if h := p.hold; h != nil {
		held = int(h.held.Load())
		p.endHold(h, false)
	}
	p.mu.Unlock()
	p.log.Info("backends set", "backends", backends, "released_held", held)
	return at, nil
}

// Hold makes new connections wait, accepted but not forwarded, until the
// next Set. The hold ends by itself after timeout (Options.HoldTimeout when
// 0): the clients still waiting are closed and new connections go to the
// backends again. A Hold during a hold restarts its timeout.
func (p *Proxy) Hold(timeout time.Duration) {
	if timeout <= 0 {
		timeout = p.opts.HoldTimeout
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.hold; h != nil {
		h.deadline = time.Now().Add(timeout)
		h.timer.Reset(timeout)
		p.log.Info("hold extended", "timeout", timeout)
		return
	}
	h := &hold{release: make(chan struct{}), deadline: time.Now().Add(timeout)}
	h.timer = time.AfterFunc(timeout, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		// A timer that fired while a Hold extended it finds a later
		// deadline: the reset timer fires again then.
		if p.hold == h && !time.Now().Before(h.deadline) {
			p.log.Warn("hold timed out; waiting clients closed", "timeout", timeout, "closed", h.held.Load())
			p.endHold(h, true)
		}
	})
	p.hold = h
	p.log.Info("holding new connections", "timeout", timeout)
}

// endHold releases the connections waiting on h; expired closes them
// instead of forwarding them. p.mu must be held.
func (p *Proxy) endHold(h *hold, expired bool) {
	h.timer.Stop()
	h.expired = expired
	close(h.release)
	p.hold = nil
}

// DrainResult says how a drain ended.
type DrainResult struct {
	// Drained connections ended by themselves within the timeout.
	Drained int `json:"drained"`
	// Closed connections were still open at the timeout and were closed.
	Closed int `json:"closed"`
}

// Drain waits until no connection to host remains, for up to timeout, then
// closes the rest. host must no longer take new connections (Set others
// first, or Hold). It drains only the connections that had picked a
// backend when it started: one held then, or accepted later, went where
// the proxy was set after, which may be host again (an agent's recovery
// that undid the rotation a drain was part of, while the drain went on).
func (p *Proxy) Drain(ctx context.Context, host string, timeout time.Duration) (DrainResult, error) {
	if err := ValidHost(host); err != nil {
		return DrainResult{}, fmt.Errorf("backend: %w", err)
	}
	p.mu.Lock()
	if p.hold == nil && slices.Contains(p.backends, host) {
		p.mu.Unlock()
		return DrainResult{}, fmt.Errorf("backend %q still takes new connections: set other backends (or hold) before draining it", host)
	}
	p.draining[host]++
	open := maps.Clone(p.conns)
	maps.DeleteFunc(open, func(c *conn, _ struct{}) bool { return c.host == "" && c.addr == "" }) // held: no backend picked yet
	connsTo := func() []*conn {
		p.mu.Lock()
		defer p.mu.Unlock()
		return slices.DeleteFunc(p.connsToLocked(host), func(c *conn) bool {
			_, ok := open[c]
			return !ok
		})
	}
	p.mu.Unlock()
	pending := connsTo()
	defer func() {
		p.mu.Lock()
		if p.draining[host]--; p.draining[host] == 0 {
			delete(p.draining, host)
		}
		p.mu.Unlock()
	}()

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := map[*conn]bool{}
	var res DrainResult
wait:
	for len(pending) > 0 {
		for _, c := range pending {
			seen[c] = true
		}
		for _, c := range pending {
			select {
			case <-c.done:
			case <-deadline.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
		pending = connsTo()
	}
	for _, c := range connsTo() {
		seen[c] = true
		c.close()
		<-c.done
		res.Closed++
	}
	res.Drained = len(seen) - res.Closed
	p.log.Info("backend drained", "backend", host, "drained", res.Drained, "closed", res.Closed)
	return res, nil
}

// connsToLocked matches host against the backend each connection was
// dialed by (an address, or a name such as the service's) and against the
// address it reached: draining a container by its address also drains the
// connections that reached it through the service's name.
func (p *Proxy) connsToLocked(host string) []*conn {
	var out []*conn
	for c := range p.conns {
		if c.host == host || c.addr == host {
			out = append(out, c)
		}
	}
	return out
}

// probeRetry is how long Probe waits before connecting again to a port
// that refused, for the first probeFast of a probe; then each wait
// doubles, up to probeRetryMax. An application that starts at once (a
// probe runs while the container gets its secrets) is seen within
// milliseconds, one that takes longer costs few connections.
const (
	probeRetry    = 2 * time.Millisecond
	probeFast     = 500 * time.Millisecond
	probeRetryMax = 50 * time.Millisecond
)

// Probe connects to every target port at host from the proxy's network
// namespace, trying again a port that does not answer yet (an application
// still starting) until timeout, in all; the error names the first port
// that did not answer. One probe thus sees a backend ready as soon as it
// listens, without a round trip to the agent per try.
func (p *Proxy) Probe(ctx context.Context, host string, timeout time.Duration) error {
	if err := ValidHost(host); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	start := time.Now()
	probed := map[int]bool{}
	for _, pp := range p.listeners() {
		if probed[pp.Target] {
			continue
		}
		probed[pp.Target] = true
		wait := probeRetry
		for {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(pp.Target)))
			if err == nil {
				c.Close()
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("port %d: %s:%d does not answer: %s", pp.Listen, host, pp.Target, dialReason(err))
			case <-t.C:
			}
			if time.Since(start) > probeFast {
				wait = min(2*wait, probeRetryMax)
			}
		}
	}
	return nil
}

// PortStats are the counters of one port.
type PortStats struct {
	Port
	// Active counts the connections accepted and not yet closed, held and
	// dialing ones included.
	Active         int64  `json:"active"`
	Accepted       uint64 `json:"accepted"`
	BytesToBackend uint64 `json:"bytes_to_backend"`
	BytesToClient  uint64 `json:"bytes_to_client"`
	// DialFailures counts failed connection attempts to a backend
	// (retried ones included); Dropped counts clients closed because no
	// backend answered in time or a hold timed out.
	DialFailures uint64 `json:"dial_failures"`
	Dropped      uint64 `json:"dropped"`
}

// Stats is a snapshot of the proxy's state and counters.
type Stats struct {
	Ports    []PortStats `json:"ports"`
	Backends []string    `json:"backends"`
	// Connections counts the live forwarded connections by backend host.
	Connections map[string]int `json:"connections"`
	// Draining lists the backends a Drain is waiting for.
	Draining []string `json:"draining,omitempty"`
	Holding  bool     `json:"holding"`
	Held     int64    `json:"held"`
	// SwitchedAt is when the current backends took effect.
	SwitchedAt time.Time `json:"switched_at"`
	// HostSockets is how many host sockets the proxy holds, and
	// HostConnections how many connections to backends it made from them
	// (see hostSockets).
	HostSockets     int    `json:"host_sockets"`
	HostConnections uint64 `json:"host_connections"`
}

// Stats returns the current state and counters.
func (p *Proxy) Stats() Stats {
	s := Stats{Connections: map[string]int{}, HostSockets: p.host.count(), HostConnections: p.host.dialed.Load()}
	for _, pp := range p.listeners() {
		s.Ports = append(s.Ports, PortStats{
			Port:           pp.Port,
			Active:         pp.active.Load(),
			Accepted:       pp.accepted.Load(),
			BytesToBackend: pp.toBackend.Load(),
			BytesToClient:  pp.toClient.Load(),
			DialFailures:   pp.dialFailures.Load(),
			Dropped:        pp.dropped.Load(),
		})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s.Backends = slices.Clone(p.backends)
	s.SwitchedAt = p.switchedAt
	if p.hold != nil {
		s.Holding = true
		s.Held = p.hold.held.Load()
	}
	for c := range p.conns {
		if c.addr != "" { // forwarded, not held or dialing
			s.Connections[c.host]++
		}
	}
	for h := range p.draining {
		s.Draining = append(s.Draining, h)
	}
	slices.Sort(s.Draining)
	return s
}
