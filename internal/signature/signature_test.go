package signature

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	key  = []byte("k")
	body = []byte(`{"secrets":["db"]}`)
	now  = time.Unix(1_800_000_000, 0)
)

func TestVerify(t *testing.T) {
	ts, sig := Sign(key, now, body)
	if err := Verify(key, body, ts, sig, now); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	if err := Verify(key, body, ts, sig, now.Add(Window)); err != nil {
		t.Fatalf("at the edge of the window: %v", err)
	}
	old := strconv.FormatInt(now.Add(-Window-time.Second).Unix(), 10)
	_, oldSig := Sign(key, now.Add(-Window-time.Second), body)
	future := strconv.FormatInt(now.Add(Window+time.Second).Unix(), 10)
	_, futureSig := Sign(key, now.Add(Window+time.Second), body)
	_, otherKey := Sign([]byte("other"), now, body)
	_, otherBody := Sign(key, now, []byte(`{}`))
	cases := []struct {
		name, ts, sig string
		want          error
	}{
		{"unsigned", "", "", ErrMissing},
		{"no timestamp", "", sig, ErrMalformed},
		{"timestamp not a number", "yesterday", sig, ErrMalformed},
		{"no sha256= prefix", ts, strings.TrimPrefix(sig, "sha256="), ErrMalformed},
		{"not hex", ts, "sha256=zz", ErrMalformed},
		{"other key", ts, otherKey, ErrMismatch},
		{"other body", ts, otherBody, ErrMismatch},
		{"timestamp changed after signing", strconv.FormatInt(now.Unix()+1, 10), sig, ErrMismatch},
		{"too old (a replay)", old, oldSig, ErrExpired},
		{"too far ahead", future, futureSig, ErrExpired},
	}
	for _, c := range cases {
		if err := Verify(key, body, c.ts, c.sig, now); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// FuzzVerify: any pair of headers is either the exact signature of the body
// at a timestamp within the window, or refused; nothing panics, and no
// error message holds the expected signature.
func FuzzVerify(f *testing.F) {
	ts, sig := Sign(key, now, body)
	f.Add(body, ts, sig)
	f.Add([]byte(""), "", "sha256=")
	f.Add([]byte("x"), "-1", "sha256=zz")
	f.Add([]byte("x"), ts, "SHA256="+strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, b []byte, ts, sig string) {
		err := Verify(key, b, ts, sig, now)
		if err == nil {
			secs, perr := strconv.ParseInt(ts, 10, 64)
			d := now.Sub(time.Unix(secs, 0))
			if perr != nil || d > Window || d < -Window || !strings.EqualFold(sig, "sha256="+hex.EncodeToString(mac(key, ts, b))) {
				t.Fatalf("accepted ts=%q sig=%q for %q", ts, sig, b)
			}
			return
		}
		_, want := Sign(key, now, b)
		if strings.Contains(err.Error(), strings.TrimPrefix(want, "sha256=")) {
			t.Fatalf("error %q holds the expected signature", err)
		}
	})
}
