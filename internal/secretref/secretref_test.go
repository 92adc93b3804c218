package secretref

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Ref
	}{
		{"dso://myapp/db_password", Ref{Path: "myapp/db_password"}},
		{"dsofile://app/db_password", Ref{File: true, Path: "app/db_password"}},
		{"dso://db_password", Ref{Path: "db_password"}},
		{"dso://app/creds#password", Ref{Path: "app/creds", Key: "password"}},
		{"dso://secret/data/prod/database?provider=vault#password", Ref{Provider: "vault", Path: "secret/data/prod/database", Key: "password"}},
		{"dsofile://prod/mysql/root_password?provider=aws", Ref{File: true, Provider: "aws", Path: "prod/mysql/root_password"}},
		{"dso://arn:aws:secretsmanager:us-east-1:1:secret:x?provider=aws", Ref{Provider: "aws", Path: "arn:aws:secretsmanager:us-east-1:1:secret:x"}},
		{"dsofile://app/key?uid=0&gid=70&mode=0440", Ref{File: true, Path: "app/key", Perm: Perm{UID: 0, GID: 70, Mode: 0o440, HasUID: true, HasGID: true, HasMode: true}}},
		{"dsofile://app/key?mode=640&provider=v#k", Ref{File: true, Provider: "v", Path: "app/key", Key: "k", Perm: Perm{Mode: 0o640, HasMode: true}}},
		{"dsofile://app/key?gid=2147483647", Ref{File: true, Path: "app/key", Perm: Perm{GID: MaxID, HasGID: true}}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if back, err := Parse(got.String()); err != nil || back != got {
			t.Errorf("Parse(%q.String()=%q) = %+v, %v", tt.in, got.String(), back, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, reason string
		offset     int
	}{
		{"vault://x/y", "unknown scheme", 0},
		{"dso:x/y", "want dso://path", 0},
		{"dso://", "empty secret path", 6},
		{"dso:///x", "starts with '/'", 6},
		{"dso://x/", "ends with '/'", 7},
		{"dso://a//b", "empty path segment", 8},
		{"dso://a/../b", `segment ".."`, 8},
		{"dso://a/b c", "space", 9},
		{"dso://a/b#", "empty key", 10},
		{"dso://a/b?", "empty query", 10},
		{"dso://a/b?region=x", `unknown parameter "region"`, 10},
		{"dso://a/b?provider=a b", "provider name", 10},
		{"dso://a/b?provider=x&provider=y", "provider given twice", 21},
		{"dso://a/b?uid=0", "dsofile:// references only", 10},
		{"dsofile://a/b?uid=root", `uid: "root" is not a number`, 14},
		{"dsofile://a/b?uid=-1", "uid: ", 14},
		{"dsofile://a/b?gid=2147483648", "gid: ", 14},
		{"dsofile://a/b?gid=", "gid: ", 14},
		{"dsofile://a/b?uid=01", "uid: ", 14},
		{"dsofile://a/b?mode=0440&mode=0400", "mode given twice", 24},
		{"dsofile://a/b?mode=4755", "octal mode from 0000 to 0777", 14},
		{"dsofile://a/b?mode=0o440", "octal mode", 14},
		{"dsofile://a/b?mode=448", "octal mode", 14},
		{"dsofile://a/b?mode=40", "octal mode", 14},
		{"dsofile://a/b?provider=v&owner=x", `unknown parameter "owner"`, 25},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		e, ok := err.(*Error)
		if !ok {
			t.Errorf("Parse(%q) error = %v, want *Error", tt.in, err)
			continue
		}
		if !strings.Contains(e.Reason, tt.reason) || e.Offset != tt.offset {
			t.Errorf("Parse(%q) = %q at %d, want %q at %d", tt.in, e.Reason, e.Offset, tt.reason, tt.offset)
		}
		if !strings.Contains(e.Error(), tt.in) {
			t.Errorf("error %q does not quote the input", e.Error())
		}
	}
}

func TestInProject(t *testing.T) {
	if got := MustParse("dso://db").InProject("app").Path; got != "app/db" {
		t.Errorf("got %q", got)
	}
	if got := MustParse("dso://other/db").InProject("app").Path; got != "other/db" {
		t.Errorf("got %q", got)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"app/db_password", "app/db/password", "my-app/x.y"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "nopath", "/a", "a/", "a b/c", "a//b", "a/\x00", "a/b#", "a/b#k", "a/b?x", "a/" + strings.Repeat("x", MaxPath)} {
		err := ValidateName(bad)
		if err == nil {
			t.Errorf("ValidateName(%.80q) = nil, want error", bad)
			continue
		}
		if len(err.Error()) > 300 {
			t.Errorf("ValidateName of a %d-byte name: a %d-byte message", len(bad), len(err.Error()))
		}
	}
}

// FuzzValidateName: a name is valid exactly when a reference reaches it:
// dso://NAME parses back to that name, with no key or query.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"app/db", "a/b#", "a/b?provider=x", "a", "a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		r, perr := Parse("dso://" + name)
		reachable := perr == nil && r.Path == name && r.Key == "" && r.Provider == "" && strings.Contains(name, "/")
		if (err == nil) != reachable {
			t.Fatalf("ValidateName(%q) = %v, but reachable by a reference = %v", name, err, reachable)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"dso://a/b", "dsofile://a/b#k", "dso://a/b?provider=v#k", "dso://", "dso://a//b", "x://y",
		"dsofile://a/b?uid=0&gid=70&mode=0440", "dsofile://a/b?mode=440&uid=1", "dso://a/b?gid=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		back, err := Parse(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, r, r.String(), back, err)
		}
	})
}

func TestPermCanonicalForm(t *testing.T) {
	got := MustParse("dsofile://app/key?mode=640&gid=5&provider=v#k").String()
	if want := "dsofile://app/key?provider=v&gid=5&mode=0640#k"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
