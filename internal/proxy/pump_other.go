//go:build !linux

package proxy

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
)

// Elsewhere than Linux (where the proxy's container runs; this serves
// development machines) each forwarded connection is copied by two
// goroutines.

func startPump(Scheduling, *slog.Logger) error { return nil }

// forward copies both ways between c's client and backend until both
// directions ended or c was closed.
func (p *Proxy) forward(c *conn, pp *port) {
	var wg sync.WaitGroup
	wg.Go(func() { copyHalf(c, c.backend, c.client, &pp.toBackend) })
	copyHalf(c, c.client, c.backend, &pp.toClient)
	wg.Wait()
}

// chunk is how much one io.Copy moves before the byte counters are updated,
// so that Stats shows the bytes of long connections while they run.
const chunk = 4 << 20

// copyHalf copies src to dst until src's end, then half-closes dst so the
// peer sees the end too. An error on either side closes the whole
// connection: it cannot go on.
func copyHalf(c *conn, dst, src *net.TCPConn, count *atomic.Uint64) {
	lr := &io.LimitedReader{R: src}
	for {
		lr.N = chunk
		n, err := io.Copy(dst, lr)
		count.Add(uint64(n))
		if err != nil {
			c.close()
			return
		}
		if lr.N > 0 { // src ended
			if err := dst.CloseWrite(); err != nil {
				c.close()
			}
			return
		}
	}
}
