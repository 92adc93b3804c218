package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// SchedBatch is the number of the SCHED_BATCH scheduling policy, as
// SchedPolicy returns it (SCHED_OTHER, the normal policy, is 0).
const SchedBatch = 3

// SchedPolicy returns the scheduling policy of a thread, field 41 of its
// /proc stat file (such as /proc/thread-self/stat).
func SchedPolicy(stat string) (int, error) {
	data, err := os.ReadFile(stat)
	if err != nil {
		return 0, err
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // from field 3
	if len(fields) < 41-2 {
		return 0, fmt.Errorf("%s: %d fields after the command, want at least %d", stat, len(fields), 41-2)
	}
	return strconv.Atoi(fields[41-3])
}

// SchedPolicies counts the threads of process pid (as the host sees it) by
// scheduling policy; a process whose threads cannot be read fails the test.
func SchedPolicies(t testing.TB, pid int) map[int]int {
	t.Helper()
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(stats) == 0 {
		t.Fatalf("listing the threads of process %d: %v (%d found)", pid, err, len(stats))
	}
	n := map[int]int{}
	for _, stat := range stats {
		policy, err := SchedPolicy(stat)
		if err != nil {
			t.Fatal(err)
		}
		n[policy]++
	}
	return n
}
