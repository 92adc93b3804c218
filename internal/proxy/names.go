package proxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// nameTTL is how long the addresses a backend name resolved to are used
// for new connections. A lookup is a round trip to Docker's resolver on
// the project network (about 0.3 ms here) that each new connection paid
// before; HAProxy and Envoy keep answers for seconds. Set forgets every
// answer and a failed dial forgets its name's, so a change the agent makes
// reaches new connections at once, and one compose makes alone (a
// recreated or scaled service) within nameTTL or a failed dial.
const nameTTL = time.Second

// lookupAttempt bounds one lookup, which Docker's resolver answers within
// a millisecond for a name on the network: the dial's retry tries again.
const lookupAttempt = time.Second

// names caches what backend names resolve to and spreads new connections
// over the addresses round-robin, as Docker's resolver does over a
// service's replicas by shuffling its answers.
type names struct {
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)

	mu sync.Mutex
	m  map[string]*answer
}

// answer is one name's addresses, as dialed.
type answer struct {
	addrs []string
	until time.Time
	next  int
}

func newNames() *names {
	return &names{
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		m: map[string]*answer{},
	}
}

// addrs returns the addresses a new connection to host tries, in order:
// host itself when it is an address, else its name's addresses, starting
// with the next one round-robin.
func (n *names) addrs(ctx context.Context, host string) ([]string, error) {
	if _, err := netip.ParseAddr(host); err == nil {
		return []string{host}, nil
	}
	n.mu.Lock()
	a := n.m[host]
	if a == nil || time.Now().After(a.until) {
		n.mu.Unlock()
		lctx, cancel := context.WithTimeout(ctx, lookupAttempt)
		addrs, err := n.lookup(lctx, host)
		cancel()
		if err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
		a = &answer{until: time.Now().Add(nameTTL)}
		for _, ip := range addrs {
			a.addrs = append(a.addrs, ip.Unmap().String())
		}
		n.mu.Lock()
		n.m[host] = a
	}
	defer n.mu.Unlock()
	out := make([]string, len(a.addrs))
	for i := range out {
		out[i] = a.addrs[(a.next+i)%len(a.addrs)]
	}
	a.next++
	return out, nil
}

// forget drops host's answer (all answers for ""), so that the next
// connection looks it up again.
func (n *names) forget(host string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if host == "" {
		clear(n.m)
		return
	}
	delete(n.m, host)
}
