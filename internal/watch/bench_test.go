package watch

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/dso-project/dso/internal/clock"
)

// BenchmarkWatcher10kKeys measures one polling round over 10,000 watched
// keys (the agent's idle target) with a version check that answers at once,
// so what is left is the watcher's own cost: ns/check, and the heap each
// watched key holds (B/key).
func BenchmarkWatcher10kKeys(b *testing.B) {
	const n = 10000
	var count atomic.Int64
	round := make(chan struct{}, 1)
	observe := func(Result) {
		if count.Add(1)%n == 0 {
			round <- struct{}{}
		}
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	w, err := New(Config{
		Check:   func(context.Context, string) (string, error) { return "v1", nil },
		Clock:   clock.NewFakeClock(t0),
		Observe: observe,
	})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		w.Add(fmt.Sprintf("aws/prod/app-%05d/password", i), "v1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if _, err := w.Snapshot(ctx); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perKey := float64(m1.HeapAlloc-m0.HeapAlloc) / n

	b.ResetTimer()
	for b.Loop() {
		w.Trigger()
		<-round
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/check")
	b.ReportMetric(perKey, "B/key")
}
