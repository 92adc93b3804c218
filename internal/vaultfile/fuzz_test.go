package vaultfile

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"testing"
)

// fuzzKey is fixed so that seeds stay valid files across runs.
var fuzzKey = func() Key {
	k, err := RawKey(bytes.Repeat([]byte{7}, KeySize), "fuzz key")
	if err != nil {
		panic(err)
	}
	return k
}()

// FuzzParse feeds arbitrary files to the decoder: it must never panic, and
// every failure must be one of the typed errors.
func FuzzParse(f *testing.F) {
	ks, err := newKeys(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	v := &Vault{path: "seed", keys: ks, entries: map[string]*entry{}}
	empty, _ := v.marshal()
	v.Set("app/a", []byte("value\n"))
	v.Set("app/b", []byte{0, 1, 2})
	v.Delete("app/b")
	full, _ := v.marshal()
	f.Add(empty)
	f.Add(full)
	f.Add(full[:len(full)-1])
	f.Add([]byte(magic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Parse("fuzz", data, fuzzKey)
		if err != nil {
			if !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrWrongKey) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		// What opens reads back the same after it is written again.
		again, err := v.marshal()
		if err != nil {
			t.Fatalf("a vault that opened does not write: %v", err)
		}
		back, err := Parse("fuzz", again, fuzzKey)
		if err != nil {
			t.Fatalf("a vault written again does not open: %v", err)
		}
		if a, b := v.List(), back.List(); !slices.EqualFunc(a, b, func(x, y Meta) bool { return x.Name == y.Name && x.Version == y.Version && x.Updated.Equal(y.Updated) }) {
			t.Fatalf("the list changed in a round trip: %v, then %v", a, b)
		}
		for _, m := range v.List() {
			x, _ := v.Get(m.Name)
			y, _ := back.Get(m.Name)
			if !bytes.Equal(x.Value, y.Value) {
				t.Fatalf("the value of %q changed in a round trip", m.Name)
			}
		}
	})
}

// FuzzDecodePayload reaches the payload decoder directly, which the
// authenticated encryption keeps out of FuzzParse's reach.
func FuzzDecodePayload(f *testing.F) {
	v := &Vault{entries: map[string]*entry{}}
	v.Set("app/a", []byte("value\n"))
	v.Set("app/b", []byte{0, 1, 2})
	v.Set("app/c", []byte("c"))
	v.Delete("app/c")
	f.Add(encodePayload([]string{"app/a", "app/b", "app/c"}, v.entries))
	f.Add(encodePayload(nil, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodePayload(data)
		if err != nil {
			return
		}
		names := slices.Sorted(maps.Keys(m))
		m2, err := decodePayload(encodePayload(names, m))
		if err != nil || len(m2) != len(m) {
			t.Fatalf("re-encoding does not decode to the same entries: %v", err)
		}
		for n, e := range m {
			e2 := m2[n]
			if e2 == nil || e2.version != e.version || !e2.updated.Equal(e.updated) || e2.deleted != e.deleted || !bytes.Equal(e2.value, e.value) {
				t.Fatalf("entry %q changed in a round trip", n)
			}
		}
	})
}
