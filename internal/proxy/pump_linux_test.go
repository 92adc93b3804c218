package proxy

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// threadPolicy returns the scheduling policy of the calling thread
// (/proc/thread-self/stat, field 41), or why it could not be read.
func threadPolicy() string {
	data, err := os.ReadFile("/proc/thread-self/stat")
	if err != nil {
		return err.Error()
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // from field 3
	if len(fields) < 39 {
		return fmt.Sprintf("/proc/thread-self/stat has %d fields after the command", len(fields))
	}
	return fields[41-3]
}

func TestScheduleBatchMovesTheLoopsThread(t *testing.T) {
	type result struct {
		before, after string
		err           error
	}
	done := make(chan result)
	go func() {
		// The goroutine ends locked to its thread, which then ends too: no
		// thread of the test binary keeps the policy.
		var r result
		r.before = threadPolicy()
		r.err = scheduleBatch()
		r.after = threadPolicy()
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.before != "0" || r.after != "3" {
		t.Fatalf("the thread's policy went from %s to %s, want from 0 (SCHED_OTHER) to 3 (SCHED_BATCH)", r.before, r.after)
	}
}
