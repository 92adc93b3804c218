package deliver

import (
	"context"
	"net"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/dso-project/dso/internal/containersock"
	"github.com/dso-project/dso/internal/initproc"
)

// direct hands data to the init of container c through the init's own
// socket, reached from the host (package containersock). handled is false,
// and Send takes the exec, whenever that way is closed here, or the socket
// does not resolve to a socket inside the container.
func direct(ctx context.Context, c container.InspectResponse, data []byte, wait time.Duration) (answer []byte, handled bool, err error) {
	handled, err = containersock.Do(ctx, c, initproc.SocketPath, wait, func(conn *net.UnixConn) (err error) {
		answer, err = initproc.Exchange(conn, data)
		return err
	})
	return answer, handled, err
}
