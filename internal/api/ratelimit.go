package api

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// clientLimits gives each client its own token bucket, so that one client's
// flood is refused while every other client, above all an authenticated
// webhook sender, keeps its own budget. A client is a credential for an
// authenticated caller and an IP address for an anonymous one.
// (golang.org/x/time/rate has one bucket; the map around it is ours.)
type clientLimits struct {
	rate  rate.Limit
	burst int
	max   int // clients tracked at once; new ones are refused beyond it

	mu      sync.Mutex
	clients map[string]*clientLimit
}

type clientLimit struct {
	lim  *rate.Limiter
	last time.Time
}

func newClientLimits(r rate.Limit, burst, max int) *clientLimits {
	return &clientLimits{rate: r, burst: burst, max: max, clients: map[string]*clientLimit{}}
}

// allow takes a token from key's bucket at now.
func (c *clientLimits) allow(key string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.clients[key]
	if !ok {
		if len(c.clients) >= c.max {
			c.forgetIdle(now)
		}
		if len(c.clients) >= c.max {
			return false
		}
		cl = &clientLimit{lim: rate.NewLimiter(c.rate, c.burst)}
		c.clients[key] = cl
	}
	cl.last = now
	return cl.lim.AllowN(now, 1)
}

// forgetIdle drops the buckets that have refilled since their last use: a
// new bucket for that client would be the same.
func (c *clientLimits) forgetIdle(now time.Time) {
	full := time.Duration(float64(c.burst) / float64(c.rate) * float64(time.Second))
	for k, cl := range c.clients {
		if now.Sub(cl.last) > full {
			delete(c.clients, k)
		}
	}
}
