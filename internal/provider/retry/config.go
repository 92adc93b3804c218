package retry

import "github.com/dso-project/dso/internal/config"

// FromConfig returns the policy of a dso.yaml provider entry: its retry
// block and its timeout.
func FromConfig(pc config.Provider) Policy {
	return Policy{Attempts: pc.Retry.Attempts, Backoff: pc.Retry.Backoff.D(), Timeout: pc.Timeout.D()}
}
