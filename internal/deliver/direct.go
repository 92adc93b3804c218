package deliver

import (
	"context"
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
	conn, handled, err := containersock.Dial(ctx, c, initproc.SocketPath, wait)
	if !handled || err != nil {
		return nil, handled, err
	}
	defer conn.Close()
	// A workload's listener may never answer: ctx ends the wait.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	answer, err = initproc.Exchange(conn, data)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return answer, true, err
}
