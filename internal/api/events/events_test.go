package events

import (
	"log/slog"
	"testing"
)

func TestSubscribeGetsHistoryThenLiveWithoutGap(t *testing.T) {
	b := NewBus(3)
	for _, s := range []string{"a", "b", "c", "d"} {
		b.Publish(Event{Type: TypeDelivery, Service: s})
	}
	hist, sub := b.Subscribe(10, 4)
	defer sub.Close()
	if len(hist) != 3 || hist[0].Service != "b" || hist[2].Service != "d" || hist[2].Seq != 4 {
		t.Fatalf("history = %+v, want b c d", hist)
	}
	b.Publish(Event{Type: TypeRotation, Service: "e"})
	if e := <-sub.C(); e.Seq != 5 || e.Time.IsZero() {
		t.Fatalf("live event = %+v", e)
	}
}

func TestSlowSubscriberDropsInsteadOfBlocking(t *testing.T) {
	b := NewBus(10)
	_, sub := b.Subscribe(0, 1)
	for range 5 {
		b.Publish(Event{Type: TypeContainer})
	}
	if sub.Dropped() != 4 {
		t.Fatalf("dropped = %d, want 4", sub.Dropped())
	}
	sub.Close()
	b.Publish(Event{}) // no panic, no block after Close
	if got := b.Recent(2); len(got) != 2 || got[1].Seq != 6 {
		t.Fatalf("recent = %+v", got)
	}
}

func TestLogHandlerPublishesRecords(t *testing.T) {
	b := NewBus(10)
	log := slog.New(NewLogHandler(b, slog.LevelInfo)).With("component", "watch").WithGroup("g")
	log.Debug("hidden")
	log.Error("poll failed", "provider", "aws")
	got := b.Recent(10)
	if len(got) != 1 {
		t.Fatalf("events = %+v", got)
	}
	e := got[0]
	if e.Type != TypeLog || e.Level != "ERROR" || e.Message != "poll failed" || e.Attrs["component"] != "watch" || e.Attrs["g.provider"] != "aws" {
		t.Fatalf("event = %+v", e)
	}
}
