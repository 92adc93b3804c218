package systemd

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// SystemctlArgs returns the systemctl arguments for a `docker dso system`
// action: enable and disable also start and stop the agent.
func SystemctlArgs(action string) ([]string, error) {
	switch action {
	case "enable", "disable":
		return []string{action, "--now", UnitName}, nil
	case "restart":
		return []string{"restart", UnitName}, nil
	case "status":
		return []string{"status", "--no-pager", UnitName}, nil
	}
	return nil, fmt.Errorf("unknown action %q: want enable, disable, restart or status", action)
}

// Priorities are the names journalctl -p accepts, most severe first.
var Priorities = []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

// CheckPriority accepts a priority name or number (0-7).
func CheckPriority(p string) error {
	if slices.Contains(Priorities, p) || (len(p) == 1 && p[0] >= '0' && p[0] <= '7') {
		return nil
	}
	return fmt.Errorf("priority %q: want one of %s or 0-7", p, strings.Join(Priorities, ", "))
}

// ParseSince turns a duration such as 1h or 30m into a time before now; a
// timestamp "2006-01-02 15:04:05" (or just the date) is taken as is. A
// time after now is refused: no log line can be that recent.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		if t := now.Add(-d); t.Before(now) {
			return t, nil
		}
		return time.Time{}, fmt.Errorf("--since %q: too long ago", s)
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			if t.After(now) {
				return time.Time{}, fmt.Errorf("--since %q is in the future", s)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration such as 1h or 30m, or a time such as \"2006-01-02 15:04:05\"", s)
}

// JournalctlArgs returns the journalctl arguments for the agent's log.
func JournalctlArgs(follow bool, priority string, since time.Time) []string {
	args := []string{"--unit", UnitName, "--no-pager", "--output", "short-iso"}
	if follow {
		args = append(args, "--follow")
	}
	if priority != "" {
		args = append(args, "--priority", priority)
	}
	if !since.IsZero() {
		args = append(args, "--since", since.Format("2006-01-02 15:04:05"))
	}
	return args
}
