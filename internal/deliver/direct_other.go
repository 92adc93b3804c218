//go:build !linux

package deliver

import (
	"context"
	"time"
)

// direct is Linux's shortcut past `docker exec` (see direct_linux.go);
// elsewhere Send always takes the exec.
func direct(context.Context, Docker, string, []byte, time.Duration) (string, bool, error) {
	return "", false, nil
}
