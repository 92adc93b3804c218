package agent

import (
	"fmt"
	"strings"
)

// A watch key names one secret of one provider of one dso.yaml:
// "CONFIG|PROVIDER|PATH" (CONFIG empty for the agent's own configuration).
// It identifies what is polled, whatever references or #keys use it.
func watchKey(config, provider, path string) string {
	return config + "|" + provider + "|" + path
}

func splitKey(key string) (config, provider, path string, err error) {
	parts := strings.SplitN(key, "|", 3)
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("malformed watch key %q", key)
	}
	return parts[0], parts[1], parts[2], nil
}

// keyName is how a watch key is shown to people: provider:path.
func keyName(key string) string {
	_, p, path, err := splitKey(key)
	if err != nil {
		return key
	}
	return p + ":" + path
}
