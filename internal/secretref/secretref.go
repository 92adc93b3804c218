// Package secretref parses the references that name secrets in a compose file
// or dso.yaml:
//
//	dso://[project/]path[?provider=NAME][#key]
//	dsofile://[project/]path[?provider=NAME][#key]
//
// dso:// gives a variable the secret's value; dsofile:// gives it the path of
// a file (on tmpfs inside the container) holding the value. "#key" selects a
// field of a JSON secret. "?provider=NAME" picks a provider from dso.yaml;
// without it the default provider is used. A path with no "/" is a name inside
// the compose project ("dso://db_password" in project "app" is
// "app/db_password"). The package is pure: no I/O.
package secretref

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Schemes.
const (
	SchemeEnv  = "dso"
	SchemeFile = "dsofile"
)

// Ref is a parsed reference.
type Ref struct {
	// File is true for dsofile:// (deliver as a file), false for dso://.
	File bool
	// Provider names a provider of dso.yaml; empty means the default one.
	Provider string
	// Path names the secret in its provider, as written ("app/db_password",
	// "secret/data/prod/db", or "db_password" before project defaulting).
	Path string
	// Key selects a field of a JSON secret; empty means the whole value.
	Key string
}

// Error says what is wrong in a reference string, and where.
type Error struct {
	Input  string
	Offset int // byte offset in Input of the problem
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid reference %s: %s (at character %d)", quoteShort(e.Input), e.Reason, e.Offset+1)
}

// IsRef reports whether s uses one of the reference schemes, so that callers
// can tell a malformed reference (an error) from an ordinary value.
func IsRef(s string) bool {
	return strings.HasPrefix(s, SchemeEnv+"://") || strings.HasPrefix(s, SchemeFile+"://") ||
		strings.HasPrefix(strings.ToLower(s), SchemeEnv+":") || strings.HasPrefix(strings.ToLower(s), SchemeFile+":")
}

// Parse parses a reference.
func Parse(s string) (Ref, error) {
	var r Ref
	bad := func(off int, format string, a ...any) (Ref, error) {
		return Ref{}, &Error{Input: s, Offset: off, Reason: fmt.Sprintf(format, a...)}
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad(0, "want dso://path or dsofile://path")
	}
	switch scheme {
	case SchemeEnv:
	case SchemeFile:
		r.File = true
	default:
		return bad(0, "unknown scheme %q: want %q or %q", scheme, SchemeEnv, SchemeFile)
	}
	off := len(scheme) + 3

	body, key, hasKey := strings.Cut(rest, "#")
	path, query, hasQuery := strings.Cut(body, "?")
	if err := checkPath(path); err != nil {
		return bad(off+err.offset, "%s", err.reason)
	}
	r.Path = path

	if hasQuery {
		qoff := off + len(path) + 1
		if query == "" {
			return bad(qoff, "empty query after '?'")
		}
		for _, kv := range strings.Split(query, "&") {
			name, value, _ := strings.Cut(kv, "=")
			switch name {
			case "provider":
				if !validName(value) {
					return bad(qoff, "provider name %q must be letters, digits, '-' or '_'", value)
				}
				if r.Provider != "" {
					return bad(qoff, "provider given twice")
				}
				r.Provider = value
			default:
				return bad(qoff, "unknown parameter %q (known: provider)", name)
			}
			qoff += len(kv) + 1
		}
	}
	if hasKey {
		koff := off + len(body) + 1
		if key == "" {
			return bad(koff, "empty key after '#'")
		}
		if i := strings.IndexFunc(key, badRune); i >= 0 {
			return bad(koff+i, "key has a space or control character")
		}
		if strings.ContainsAny(key, "#?") {
			return bad(koff+strings.IndexAny(key, "#?"), "key has '#' or '?'")
		}
		r.Key = key
	}
	return r, nil
}

// MustParse is Parse for constants in tests and examples; it panics on error.
func MustParse(s string) Ref {
	r, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return r
}

// String returns the canonical form of r, which Parse reads back to r.
func (r Ref) String() string {
	var b strings.Builder
	if r.File {
		b.WriteString(SchemeFile)
	} else {
		b.WriteString(SchemeEnv)
	}
	b.WriteString("://")
	b.WriteString(r.Path)
	if r.Provider != "" {
		b.WriteString("?provider=")
		b.WriteString(r.Provider)
	}
	if r.Key != "" {
		b.WriteString("#")
		b.WriteString(r.Key)
	}
	return b.String()
}

// InProject returns r with a path that has no "/" placed inside project, as
// the seed's local mode does: "db_password" in project "app" is
// "app/db_password". Paths that already have a "/" are left alone.
func (r Ref) InProject(project string) Ref {
	if project != "" && !strings.Contains(r.Path, "/") {
		r.Path = project + "/" + r.Path
	}
	return r
}

// MaxPath bounds the path of a reference, and so a secret name (the local
// vault stores names of at most this many bytes).
const MaxPath = 4096

// ValidateName checks a secret name as used by `docker dso secret set NAME`:
// the path part of a reference, "project/path". A name is valid only when
// a reference reaches it: dso://NAME must parse back to exactly NAME (so no
// '#' or '?', which start a key or a query).
func ValidateName(name string) error {
	quoted := quoteShort(name)
	if err := checkPath(name); err != nil {
		return fmt.Errorf("invalid secret name %s: %s (at character %d)", quoted, err.reason, err.offset+1)
	}
	if i := strings.IndexAny(name, "#?"); i >= 0 {
		return fmt.Errorf("invalid secret name %s: %q would start a %s in a reference, so no reference could reach this name (at character %d)", quoted, name[i], map[byte]string{'#': "key", '?': "query"}[name[i]], i+1)
	}
	if !strings.Contains(name, "/") {
		return fmt.Errorf("invalid secret name %s: want project/path, as in dso://project/path", quoted)
	}
	return nil
}

// quoteShort quotes s for a message, cut to its first 64 bytes when longer.
func quoteShort(s string) string {
	if len(s) <= 64 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:64], len(s))
}

type pathError struct {
	offset int
	reason string
}

func checkPath(p string) *pathError {
	if p == "" {
		return &pathError{0, "empty secret path"}
	}
	if len(p) > MaxPath {
		return &pathError{MaxPath, fmt.Sprintf("path is longer than %d bytes", MaxPath)}
	}
	if !utf8.ValidString(p) {
		return &pathError{0, "path is not valid UTF-8"}
	}
	if i := strings.IndexFunc(p, badRune); i >= 0 {
		return &pathError{i, "path has a space or control character"}
	}
	if p[0] == '/' {
		return &pathError{0, "path starts with '/'"}
	}
	if p[len(p)-1] == '/' {
		return &pathError{len(p) - 1, "path ends with '/'"}
	}
	off := 0
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return &pathError{off, "empty path segment ('//')"}
		case ".", "..":
			return &pathError{off, fmt.Sprintf("path segment %q is not allowed", seg)}
		}
		off += len(seg) + 1
	}
	return nil
}

func badRune(r rune) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
