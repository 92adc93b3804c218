// Package secretcache keeps the agent's last-known-good secret values so
// that a container that starts while its backend is down still gets them.
// The values live in one anonymous memory mapping outside the Go heap,
// locked against swap (mlock) and left out of core dumps (MADV_DONTDUMP);
// freed bytes are zeroed, and nothing is ever written to disk. Each secret
// remembers when its backend last confirmed its version; a value older than
// the maximum age is not served. The same memory keeps what each running
// container was last delivered (Keep), for a container brought back by a
// rollback.
package secretcache

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/clock"
)

// minArena is the smallest mapping, in bytes.
const minArena = 64 << 10

// ErrTooOld is a cached value past the maximum age.
var ErrTooOld = errors.New("last-known value older than agent.cache.max_age")

// Cache holds values by secret (a key naming one secret of one provider)
// and field ("" for the whole value). It is safe for concurrent use.
type Cache struct {
	maxAge time.Duration
	clk    clock.Clock

	mu      sync.Mutex
	buf     []byte // the mapping; nil until the first value
	used    int    // bytes handed out at the end of buf
	live    int    // bytes of values still held
	lockErr error  // why buf is not locked, when it is not
	secrets map[string]secret
	kept    map[string]span // Keep's blobs, by owner
}

// secret is kept small (it is stored in the map, its fields in a short
// slice): an agent may hold 10,000 of them.
type secret struct {
	version   string
	confirmed int64 // unix nanoseconds
	fields    []part
}

type part struct {
	name string
	span
}

type span struct{ off, n int }

// find returns the index of field name in s, or -1.
func (s *secret) find(name string) int {
	for i, f := range s.fields {
		if f.name == name {
			return i
		}
	}
	return -1
}

// New returns an empty cache serving values up to maxAge old.
func New(maxAge time.Duration, clk clock.Clock) *Cache {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Cache{maxAge: maxAge, clk: clk, secrets: map[string]secret{}, kept: map[string]span{}}
}

// MaxAge is the oldest a served value may be.
func (c *Cache) MaxAge() time.Duration { return c.maxAge }

// Put stores the value of field of secret at version, confirmed now. A new
// version drops the fields of the old one.
func (c *Cache) Put(key, field string, value []byte, version string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.secrets[key]
	if ok && s.version != version {
		c.dropLocked(&s)
	}
	s.version = version
	s.confirmed = c.clk.Now().UnixNano()
	if i := s.find(field); i >= 0 {
		c.free(s.fields[i].span)
		s.fields = append(s.fields[:i], s.fields[i+1:]...)
	}
	// Store the secret before storing the value: a compaction moves the
	// values of the secrets in the map.
	c.secrets[key] = s
	sp, err := c.store(value)
	if err != nil {
		return err
	}
	s = c.secrets[key]
	s.fields = append(s.fields, part{name: field, span: sp})
	c.secrets[key] = s
	return nil
}

// Get returns a copy of the value of field of secret, its version and its
// age (the time since its backend last confirmed it). A value past the
// maximum age is not returned: the error wraps ErrTooOld and says its age.
func (c *Cache) Get(key, field string) (value []byte, version string, age time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.secrets[key]
	i := s.find(field)
	if !ok || i < 0 {
		return nil, "", 0, errors.New("no last-known value")
	}
	sp := s.fields[i].span
	age = c.clk.Now().Sub(time.Unix(0, s.confirmed))
	if age > c.maxAge {
		return nil, "", age, fmt.Errorf("%w (%s): the last one is %s old", ErrTooOld, c.maxAge, age.Round(time.Second))
	}
	return append([]byte(nil), c.buf[sp.off:sp.off+sp.n]...), s.version, age, nil
}

// Seen records the version the backend has now. The same version as the
// cached one confirms its values: they are as good as new. Another version
// drops them: serving them after the backend moved on would undo a
// rotation (the delivery that follows stores the new values).
func (c *Cache) Seen(key, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.secrets[key]
	switch {
	case !ok:
	case s.version == version:
		s.confirmed = c.clk.Now().UnixNano()
		c.secrets[key] = s
	default:
		c.dropLocked(&s)
		delete(c.secrets, key)
	}
}

// Drop forgets secret and zeroes its values.
func (c *Cache) Drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.secrets[key]; ok {
		c.dropLocked(&s)
		delete(c.secrets, key)
	}
}

// Keep stores a copy of blob under owner (the agent: a container's last
// payload), in place of what owner had; the old bytes are zeroed. Unlike
// cached values, a kept blob never ages: it stays until Release.
func (c *Cache) Keep(owner string, blob []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sp, ok := c.kept[owner]; ok {
		c.free(sp)
		delete(c.kept, owner)
	}
	sp, err := c.store(blob)
	if err != nil {
		return err
	}
	c.kept[owner] = sp
	return nil
}

// Kept returns a copy of the blob kept under owner.
func (c *Cache) Kept(owner string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sp, ok := c.kept[owner]
	if !ok {
		return nil, false
	}
	return append([]byte(nil), c.buf[sp.off:sp.off+sp.n]...), true
}

// Release zeroes and forgets the blob kept under owner.
func (c *Cache) Release(owner string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sp, ok := c.kept[owner]; ok {
		c.free(sp)
		delete(c.kept, owner)
	}
}

// Len is the number of secrets held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.secrets)
}

// Unlocked returns why the values are not locked against swap (the
// process's RLIMIT_MEMLOCK, say), or nil when they are.
func (c *Cache) Unlocked() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lockErr
}

// Close zeroes every value and unmaps the memory.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.secrets, c.kept = map[string]secret{}, map[string]span{}
	c.release(c.buf)
	c.buf, c.used, c.live = nil, 0, 0
}

func (c *Cache) dropLocked(s *secret) {
	for _, f := range s.fields {
		c.free(f.span)
	}
	s.fields = s.fields[:0]
}

func (c *Cache) free(sp span) {
	clear(c.buf[sp.off : sp.off+sp.n])
	c.live -= sp.n
}

// store copies value into the mapping, growing or compacting it when the
// end is reached.
func (c *Cache) store(value []byte) (span, error) {
	n := len(value)
	if c.used+n > len(c.buf) {
		if err := c.compact(n); err != nil {
			return span{}, err
		}
	}
	sp := span{c.used, n}
	copy(c.buf[sp.off:], value)
	c.used += n
	c.live += n
	return sp, nil
}

// compact moves the live values into a new mapping with room for extra
// more bytes (at least twice what is live), then zeroes and unmaps the old.
func (c *Cache) compact(extra int) error {
	size := minArena
	for size < 2*(c.live+extra) {
		size *= 2
	}
	buf, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("secret cache: map %d bytes: %w", size, err)
	}
	// Best effort on both: a failed lock is reported by Unlocked; a kernel
	// without MADV_DONTDUMP still has the process marked not dumpable.
	c.lockErr = unix.Mlock(buf)
	if c.lockErr != nil {
		c.lockErr = fmt.Errorf("mlock of %d bytes: %w (raise LimitMEMLOCK / ulimit -l)", size, c.lockErr)
	}
	dontDump(buf)
	used := 0
	for _, s := range c.secrets {
		for i, f := range s.fields { // fields is shared with the map's copy
			copy(buf[used:], c.buf[f.off:f.off+f.n])
			s.fields[i].span = span{used, f.n}
			used += f.n
		}
	}
	for owner, sp := range c.kept {
		copy(buf[used:], c.buf[sp.off:sp.off+sp.n])
		c.kept[owner] = span{used, sp.n}
		used += sp.n
	}
	c.release(c.buf)
	c.buf, c.used = buf, used
	return nil
}

func (c *Cache) release(buf []byte) {
	if buf == nil {
		return
	}
	clear(buf)
	_ = unix.Munlock(buf)
	_ = unix.Munmap(buf)
}
