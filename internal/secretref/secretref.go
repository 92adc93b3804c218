// Package secretref parses the references that name secrets in a compose file
// or dso.yaml:
//
//	dso://[project/]path[?provider=NAME][#key]
//	dsofile://[project/]path[?provider=NAME][&uid=N][&gid=N][&mode=0440][#key]
//
// dso:// gives a variable the secret's value; dsofile:// gives it the path of
// a file (on tmpfs inside the container) holding the value, owned by the
// container's user with mode 0400 unless uid, gid or mode say otherwise. "#key" selects a
// field of a JSON secret. "?provider=NAME" picks a provider from dso.yaml;
// without it the default provider is used. A path with no "/" is a name inside
// the compose project ("dso://db_password" in project "app" is
// "app/db_password"). The package is pure: no I/O.
package secretref

import (
	"fmt"
	"strconv"
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
	// Perm is the owner and mode of the file of a dsofile:// reference; its
	// zero value keeps the defaults (the container's user, mode 0400).
	Perm Perm
}

// Perm is the owner and mode asked for a file secret, like the uid, gid and
// mode of a Swarm secret. Each part applies only when its Has flag is set.
type Perm struct {
	UID, GID                uint32
	Mode                    uint32 // permission bits, 0 to 0777
	HasUID, HasGID, HasMode bool
}

// MaxID is the largest uid or gid a reference may name.
const MaxID = 1<<31 - 1

// IsZero reports whether p keeps every default.
func (p Perm) IsZero() bool { return p == Perm{} }

// Query returns p as the parameters of a reference: "uid=0&gid=70&mode=0440",
// with the parts that are set, in that order.
func (p Perm) Query() string {
	var parts []string
	if p.HasUID {
		parts = append(parts, "uid="+strconv.FormatUint(uint64(p.UID), 10))
	}
	if p.HasGID {
		parts = append(parts, "gid="+strconv.FormatUint(uint64(p.GID), 10))
	}
	if p.HasMode {
		parts = append(parts, fmt.Sprintf("mode=%04o", p.Mode))
	}
	return strings.Join(parts, "&")
}

// ParseID reads a uid or gid: a decimal number from 0 to MaxID.
func ParseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > MaxID || s == "" || s[0] == '+' || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q is not a number from 0 to %d", s, MaxID)
	}
	return uint32(n), nil
}

// ParseMode reads permission bits in octal: "0440" or "440", from 0000 to
// 0777 (no setuid, setgid or sticky bit).
func ParseMode(s string) (uint32, error) {
	t := strings.TrimPrefix(s, "0")
	if len(s) == 4 && len(t) == 3 || len(s) == 3 {
		if n, err := strconv.ParseUint(s, 8, 32); err == nil && n <= 0o777 {
			return uint32(n), nil
		}
	}
	return 0, fmt.Errorf("%q is not an octal mode from 0000 to 0777, such as 0440", s)
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
		seen := map[string]bool{}
		for _, kv := range strings.Split(query, "&") {
			name, value, _ := strings.Cut(kv, "=")
			if seen[name] {
				return bad(qoff, "%s given twice", name)
			}
			seen[name] = true
			var err error
			switch name {
			case "provider":
				if !validName(value) {
					return bad(qoff, "provider name %q must be letters, digits, '-' or '_'", value)
				}
				r.Provider = value
			case "uid", "gid", "mode":
				if !r.File {
					return bad(qoff, "%s applies to dsofile:// references only (the owner and mode of the file)", name)
				}
				switch name {
				case "uid":
					r.Perm.UID, err = ParseID(value)
					r.Perm.HasUID = true
				case "gid":
					r.Perm.GID, err = ParseID(value)
					r.Perm.HasGID = true
				default:
					r.Perm.Mode, err = ParseMode(value)
					r.Perm.HasMode = true
				}
				if err != nil {
					return bad(qoff, "%s: %v", name, err)
				}
			default:
				return bad(qoff, "unknown parameter %q (known: provider, uid, gid, mode)", name)
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
	var query []string
	if r.Provider != "" {
		query = append(query, "provider="+r.Provider)
	}
	if r.File && !r.Perm.IsZero() {
		query = append(query, r.Perm.Query())
	}
	if len(query) > 0 {
		b.WriteString("?")
		b.WriteString(strings.Join(query, "&"))
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
