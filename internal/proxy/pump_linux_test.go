package proxy_test

import (
	"testing"

	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/testbed"
)

func TestScheduleBatchMovesTheLoopsThread(t *testing.T) {
	type result struct {
		before, after int
		err           error
	}
	done := make(chan result)
	go func() {
		// The goroutine ends locked to its thread, which then ends too: no
		// thread of the test binary keeps the policy.
		var r result
		if r.before, r.err = testbed.SchedPolicy("/proc/thread-self/stat"); r.err == nil {
			if r.err = proxy.ScheduleBatch(); r.err == nil {
				r.after, r.err = testbed.SchedPolicy("/proc/thread-self/stat")
			}
		}
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.before != 0 || r.after != testbed.SchedBatch {
		t.Fatalf("the thread's policy went from %d to %d, want from 0 (SCHED_OTHER) to %d (SCHED_BATCH)", r.before, r.after, testbed.SchedBatch)
	}
}
