package deliver

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/initproc"
)

const canary = "dso-canary-reply-5f1c2a9e77"

func payload() *initproc.Payload {
	return NewPayload([]Value{{Var: "DATABASE_PASSWORD_FILE", File: true, Data: []byte(canary)}, {Var: "TOKEN", Data: []byte("short")}}, "")
}

func TestReplyText(t *testing.T) {
	raw, _ := json.Marshal(payload())
	cases := []struct{ name, in, want string }{
		{"the real init's error", "error: env name \"X-Y\" is not a valid variable name\n", `error: env name "X-Y" is not a valid variable name`},
		{"a variable name of the payload is kept", "error: file DATABASE_PASSWORD_FILE: no space left on device", "error: file DATABASE_PASSWORD_FILE: no space left on device"},
		{"lines, tabs and escapes", "line one\r\n\tline two\x1b[31m red\x00", "line one line two[31m red"},
		{"non-ASCII is dropped", "caf\xc3\xa9 \xe2\x80\xae evil", "caf evil"},
		{"the raw value", "you sent " + canary, withheld},
		{"the value in base64", "got " + base64.StdEncoding.EncodeToString([]byte(canary)), withheld},
		{"the value in base64, cut by a newline", "got " + base64.StdEncoding.EncodeToString([]byte(canary))[:16] + "\n" + base64.StdEncoding.EncodeToString([]byte(canary))[16:], "got [withheld] [withheld]"},
		{"the value in hex", "got " + hex.EncodeToString([]byte(canary)), "got [withheld]"},
		{"the whole payload", string(raw), withheld},
		{"a long answer is cut", strings.Repeat("word ", 100), strings.Repeat("word ", 40)[:maxReply] + " (cut)"},
	}
	for _, c := range cases {
		if got := ReplyText([]byte(c.in), payload()); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// FuzzReplyText: whatever a container answers, the text DSO repeats is
// bounded, printable ASCII on one line, and holds no delivered value, nor
// its base64 or hex.
func FuzzReplyText(f *testing.F) {
	raw, _ := json.Marshal(payload())
	f.Add([]byte("ok\n"), []byte(canary))
	f.Add(raw, []byte(canary))
	f.Add([]byte("error: "+base64.StdEncoding.EncodeToString([]byte(canary))), []byte(canary))
	f.Add([]byte("\x1b]0;title\x07 "+canary[:10]+"\n"+canary[10:]), []byte(canary))
	f.Fuzz(func(t *testing.T, answer, value []byte) {
		p := NewPayload([]Value{{Var: "V", Data: value}, {Var: "F", File: true, Data: value}}, "")
		got := ReplyText(answer, p)
		if len(got) > maxReply+len(" (cut)") {
			t.Fatalf("%d bytes", len(got))
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] > 0x7e {
				t.Fatalf("byte %#x in %q", got[i], got)
			}
		}
		if len(value) >= minValue && strings.Contains(got, string(value)) {
			t.Fatalf("the value %q is in %q", value, got)
		}
		if len(value) >= 12 {
			for _, enc := range []string{base64.StdEncoding.EncodeToString(value), base64.RawURLEncoding.EncodeToString(value), hex.EncodeToString(value)} {
				if strings.Contains(got, enc) {
					t.Fatalf("the value %q is in %q as %q", value, got, enc)
				}
			}
		}
	})
}
