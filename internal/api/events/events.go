// Package events is the agent's in-process event bus: deliveries,
// rotations, provider errors, container events and log records, fanned out
// to subscribers (the SSE endpoints) with a bounded history for late
// readers. Events carry names, versions and ids, never a secret value.
package events

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Event types.
const (
	TypeDelivery      = "delivery"
	TypeRotation      = "rotation"
	TypeSecretChange  = "secret_change"
	TypeProviderError = "provider_error"
	TypeContainer     = "container"
	TypeLog           = "log"
	TypeRegistration  = "registration"
)

// Event is one thing that happened in the agent.
type Event struct {
	Seq       uint64            `json:"seq"`
	Time      time.Time         `json:"time"`
	Type      string            `json:"type"`
	Level     string            `json:"level,omitempty"` // INFO, WARN, ERROR (slog level names)
	Message   string            `json:"message,omitempty"`
	Project   string            `json:"project,omitempty"`
	Service   string            `json:"service,omitempty"`
	Container string            `json:"container,omitempty"`
	Secret    string            `json:"secret,omitempty"` // a secret's name or reference, never its value
	Version   string            `json:"version,omitempty"`
	Provider  string            `json:"provider,omitempty"`
	Strategy  string            `json:"strategy,omitempty"`
	Result    string            `json:"result,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
}

// Bus fans events out to subscribers. A subscriber that does not keep up
// loses events (counted in Dropped) rather than slowing the agent.
type Bus struct {
	now func() time.Time

	mu      sync.Mutex
	seq     uint64
	history []Event // ring
	next    int
	full    bool
	subs    map[*Subscription]struct{}
}

// NewBus returns a bus keeping the last `history` events.
func NewBus(history int) *Bus {
	if history <= 0 {
		history = 1
	}
	return &Bus{now: time.Now, history: make([]Event, history), subs: map[*Subscription]struct{}{}}
}

// Publish stamps e with a sequence number (and the time, when unset) and
// hands it to every subscriber.
func (b *Bus) Publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	e.Seq = b.seq
	if e.Time.IsZero() {
		e.Time = b.now()
	}
	b.history[b.next] = e
	b.next = (b.next + 1) % len(b.history)
	if b.next == 0 {
		b.full = true
	}
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			s.dropped++
		}
	}
}

// Recent returns up to n of the latest events, oldest first.
func (b *Bus) Recent(n int) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.recent(n)
}

func (b *Bus) recent(n int) []Event {
	size := b.next
	if b.full {
		size = len(b.history)
	}
	n = min(max(n, 0), size)
	out := make([]Event, 0, n)
	for i := size - n; i < size; i++ {
		out = append(out, b.history[(b.next-size+i+len(b.history))%len(b.history)])
	}
	return out
}

// Subscription receives events published after it was made.
type Subscription struct {
	bus     *Bus
	c       chan Event
	dropped uint64
}

// Subscribe returns the last `history` events and a subscription to the
// ones that follow, with no gap and no overlap between them.
func (b *Bus) Subscribe(history, buffer int) ([]Event, *Subscription) {
	if buffer <= 0 {
		buffer = 64
	}
	s := &Subscription{bus: b, c: make(chan Event, buffer)}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[s] = struct{}{}
	return b.recent(history), s
}

// C delivers the events.
func (s *Subscription) C() <-chan Event { return s.c }

// Dropped tells how many events this subscriber missed for being slow.
func (s *Subscription) Dropped() uint64 {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return s.dropped
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	delete(s.bus.subs, s)
}

// LogHandler is a slog.Handler that publishes each record at or above its
// level as a TypeLog event, so that `docker dso system logs --api` can read
// the agent's log where journald is absent. Combine it with the agent's
// own handler through slog.NewMultiHandler.
type LogHandler struct {
	bus   *Bus
	level slog.Leveler
	attrs []slog.Attr
	group string
}

// NewLogHandler returns a handler publishing to bus.
func NewLogHandler(bus *Bus, level slog.Leveler) *LogHandler {
	return &LogHandler{bus: bus, level: level}
}

// Enabled implements slog.Handler.
func (h *LogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *LogHandler) Handle(_ context.Context, r slog.Record) error {
	e := Event{Time: r.Time, Type: TypeLog, Level: r.Level.String(), Message: r.Message}
	add := func(a slog.Attr) bool {
		if e.Attrs == nil {
			e.Attrs = map[string]string{}
		}
		k := a.Key
		if h.group != "" {
			k = h.group + "." + k
		}
		e.Attrs[k] = a.Value.Resolve().String()
		return true
	}
	if len(h.attrs) > 0 {
		e.Attrs = map[string]string{}
		for _, a := range h.attrs {
			e.Attrs[a.Key] = a.Value.Resolve().String()
		}
	}
	r.Attrs(add)
	h.bus.Publish(e)
	return nil
}

// WithAttrs implements slog.Handler.
func (h *LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if h.group != "" {
			a.Key = h.group + "." + a.Key
		}
		n.attrs = append(n.attrs, a)
	}
	return &n
}

// WithGroup implements slog.Handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "." + name
	}
	n.group = name
	return &n
}
