package secretcache

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/clock"
)

func TestGetServesUpToMaxAge(t *testing.T) {
	clk := clock.NewFakeClock(time.Unix(1e9, 0))
	c := New(time.Hour, clk)
	defer c.Close()
	if err := c.Put("vault|app/db", "password", []byte("canary-1"), "v1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(59 * time.Minute)
	v, ver, age, err := c.Get("vault|app/db", "password")
	if err != nil || string(v) != "canary-1" || ver != "v1" || age != 59*time.Minute {
		t.Fatalf("Get after 59m = %q, %q, %s, %v; want canary-1, v1, 59m0s, nil", v, ver, age, err)
	}
	clk.Advance(2 * time.Minute)
	if v, _, _, err := c.Get("vault|app/db", "password"); !errors.Is(err, ErrTooOld) || v != nil {
		t.Fatalf("Get after 61m = %q, %v; want nothing and ErrTooOld", v, err)
	}
	c.Seen("vault|app/db", "v1")
	if _, _, age, err := c.Get("vault|app/db", "password"); err != nil || age != 0 {
		t.Fatalf("after the backend was seen with the same version: age %s, %v; want 0s, nil", age, err)
	}
	if _, _, _, err := c.Get("vault|app/db", "user"); err == nil {
		t.Fatal("Get of a field never stored succeeded")
	}
}

// TestAnotherVersionSeenDropsTheValue: once the backend has moved to a new
// version, the old value is never served, however young.
func TestAnotherVersionSeenDropsTheValue(t *testing.T) {
	c := New(time.Hour, nil)
	defer c.Close()
	c.Put("vault|app/db", "password", []byte("canary-old"), "v1")
	c.Seen("vault|app/db", "v2")
	if v, _, _, err := c.Get("vault|app/db", "password"); err == nil {
		t.Fatalf("served %q after the backend moved to v2", v)
	}
	if bytes.Contains(c.buf, []byte("canary-old")) {
		t.Fatal("the dropped value is still in the cache's memory")
	}
}

func TestNewVersionDropsOldFields(t *testing.T) {
	c := New(time.Hour, nil)
	defer c.Close()
	c.Put("k", "a", []byte("old-a"), "v1")
	c.Put("k", "b", []byte("old-b"), "v1")
	c.Put("k", "a", []byte("new-a"), "v2")
	if _, _, _, err := c.Get("k", "b"); err == nil {
		t.Fatal("field b of version v1 is still served after v2 was stored")
	}
	if v, ver, _, _ := c.Get("k", "a"); string(v) != "new-a" || ver != "v2" {
		t.Fatalf("Get = %q@%s, want new-a@v2", v, ver)
	}
	if bytes.Contains(c.buf, []byte("old-")) {
		t.Fatal("the old version's bytes are still in the cache's memory")
	}
}

// TestGrowAndCompact stores more than the first mapping holds, replacing
// values as it goes, and checks every value survives the moves and no
// replaced value stays in memory.
func TestGrowAndCompact(t *testing.T) {
	c := New(time.Hour, nil)
	defer c.Close()
	val := func(i, gen int) []byte {
		return fmt.Appendf(nil, "value-%05d-gen%d-%s", i, gen, bytes.Repeat([]byte{'x'}, 40))
	}
	const n = 5000
	for gen := 0; gen < 3; gen++ {
		for i := range n {
			if err := c.Put(fmt.Sprint("s", i), "", val(i, gen), fmt.Sprint(gen)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n {
		v, _, _, err := c.Get(fmt.Sprint("s", i), "")
		if err != nil || !bytes.Equal(v, val(i, 2)) {
			t.Fatalf("secret %d: %q, %v", i, v, err)
		}
	}
	if bytes.Contains(c.buf, []byte("gen0")) || bytes.Contains(c.buf, []byte("gen1")) {
		t.Fatal("replaced values are still in the cache's memory")
	}
	if err := c.Unlocked(); err != nil {
		t.Logf("memory not locked here: %v", err)
	}
	c.Drop("s0")
	if c.Len() != n-1 {
		t.Fatalf("Len = %d after a drop, want %d", c.Len(), n-1)
	}
}

// TestKeptBlobsSurviveCompactionAndAreZeroed: blobs kept beside cached
// values come back intact after the mapping grows and compacts; a blob
// replaced or released is no longer in the cache's memory.
func TestKeptBlobsSurviveCompactionAndAreZeroed(t *testing.T) {
	c := New(time.Hour, nil)
	defer c.Close()
	blob := func(i, gen int) []byte {
		return fmt.Appendf(nil, "blob-%04d-gen%d-%s", i, gen, bytes.Repeat([]byte{'y'}, 200))
	}
	const n = 400
	for gen := 0; gen < 2; gen++ {
		for i := range n {
			if err := c.Keep(fmt.Sprint("c", i), blob(i, gen)); err != nil {
				t.Fatal(err)
			}
			if err := c.Put(fmt.Sprint("s", i), "", blob(i, 9), "1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n {
		if got, ok := c.Kept(fmt.Sprint("c", i)); !ok || !bytes.Equal(got, blob(i, 1)) {
			t.Fatalf("kept blob %d: %q, %v", i, got, ok)
		}
	}
	if bytes.Contains(c.buf, []byte("gen0")) {
		t.Fatal("replaced blobs are still in the cache's memory")
	}
	c.Release("c7")
	if _, ok := c.Kept("c7"); ok || bytes.Contains(c.buf, blob(7, 1)) {
		t.Fatal("a released blob is still kept")
	}
}
