package deliver

import (
	"bytes"
	"encoding/base64"
	"strings"

	"github.com/dso-project/dso/internal/initproc"
)

// maxReply bounds the part of an init's answer that DSO repeats.
const maxReply = 200

// minToken is the length from which a run of letters, digits and + = _ -
// in an answer is withheld (unless it is a variable name of the payload):
// base64 or hex of anything but a few bytes is such a run.
const minToken = 16

// minValue is the length from which a delivered value is looked for in an
// answer; shorter values would match ordinary words.
const minValue = 6

const withheld = "(the init's answer is withheld: it held delivered data)"

// ReplyText turns what came back from the container when a delivery
// failed into text that may go into the agent's log, its events and
// status. The container is not trusted: the workload can replace the init's
// socket in its tmpfs and answer anything. So the text is cut to maxReply
// bytes of printable ASCII (no newline, no escape sequence), long runs that
// could encode data are withheld, and an answer holding one of p's values
// is withheld as a whole.
func ReplyText(out []byte, p *initproc.Payload) string {
	if holdsValue(out, p) {
		return withheld
	}
	var b strings.Builder
	space := false
	for _, c := range out {
		switch {
		case c == '\n' || c == '\r' || c == '\t' || c == ' ':
			space = b.Len() > 0
			continue
		case c < 0x20 || c > 0x7e:
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(c)
		if b.Len() >= 4*maxReply {
			break
		}
	}
	text := withholdTokens(b.String(), p)
	if len(text) > maxReply {
		text = text[:maxReply] + " (cut)"
	}
	if holdsValue([]byte(text), p) {
		return withheld
	}
	return text
}

// holdsValue tells whether out holds one of p's values, as it is or in
// base64 as the payload carries it.
func holdsValue(out []byte, p *initproc.Payload) bool {
	for _, m := range []map[string][]byte{p.Env, p.Files} {
		for _, v := range m {
			if len(v) >= minValue && (bytes.Contains(out, v) || bytes.Contains(out, []byte(base64.StdEncoding.EncodeToString(v)))) {
				return true
			}
		}
	}
	return false
}

// withholdTokens replaces each run of token characters of minToken or more
// that is not a variable name of p.
func withholdTokens(s string, p *initproc.Payload) string {
	var b strings.Builder
	start := -1
	flush := func(end int) {
		if start < 0 {
			return
		}
		tok := s[start:end]
		_, isEnv := p.Env[tok]
		if len(tok) >= minToken && !isEnv {
			b.WriteString("[withheld]")
		} else {
			b.WriteString(tok)
		}
		start = -1
	}
	for i := 0; i < len(s); i++ {
		if isTokenChar(s[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		flush(i)
		b.WriteByte(s[i])
	}
	flush(len(s))
	return b.String()
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '=' || c == '_' || c == '-'
}
