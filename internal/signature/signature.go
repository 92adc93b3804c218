// Package signature signs and checks webhook bodies, the inbound ones the
// agent's REST API accepts and the outbound notifications it sends, the way
// Stripe and GitHub do: an HMAC-SHA256 over a timestamp and the body, so
// that a captured request cannot be replayed once its timestamp is out of
// the window.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a signed request.
const (
	// Header carries "sha256=" and the hex HMAC-SHA256 of
	// "<timestamp>.<body>" under the shared secret.
	Header = "X-DSO-Signature"
	// TimestampHeader carries the signing time in Unix seconds.
	TimestampHeader = "X-DSO-Timestamp"
)

// Window is how far a timestamp may be from the receiver's clock, either
// way.
const Window = 5 * time.Minute

// Errors of Verify, for errors.Is; the messages name what is wrong, never
// the secret or the expected signature.
var (
	ErrMissing   = errors.New("the request is not signed: send " + TimestampHeader + " and " + Header)
	ErrMalformed = errors.New("malformed signature headers")
	ErrExpired   = errors.New("the signature's timestamp is outside the 5-minute window (a replay, or a clock out of sync)")
	ErrMismatch  = errors.New("the signature does not match the timestamp and body")
)

// Sign returns the TimestampHeader and Header values for body signed at t.
func Sign(secret []byte, t time.Time, body []byte) (timestamp, sig string) {
	timestamp = strconv.FormatInt(t.Unix(), 10)
	return timestamp, "sha256=" + hex.EncodeToString(mac(secret, timestamp, body))
}

// Verify checks the headers of a request received at now. It returns nil
// or an error wrapping one of the Err values above.
func Verify(secret, body []byte, timestamp, sig string, now time.Time) error {
	if timestamp == "" && sig == "" {
		return ErrMissing
	}
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s must be Unix seconds", ErrMalformed, TimestampHeader)
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	if !ok {
		return fmt.Errorf("%w: %s must be sha256=<hex>", ErrMalformed, Header)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return fmt.Errorf("%w: %s must be sha256=<hex>", ErrMalformed, Header)
	}
	if !hmac.Equal(got, mac(secret, timestamp, body)) {
		return ErrMismatch
	}
	if d := now.Sub(time.Unix(secs, 0)); d > Window || d < -Window {
		return ErrExpired
	}
	return nil
}

func mac(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}
