package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that the loader never panics, that every failure is a
// *ValidationError wrapping ErrInvalid whose problems all have a file and a
// position, and that no value from the environment leaks into an error.
// Seeds: every file of testdata plus the committed corpus.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	l := testLoader()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := l.Parse("dso.yaml", data)
		if err == nil {
			if c == nil || c.File != "dso.yaml" {
				t.Fatalf("no error and config %v", c)
			}
			c.Redacted()
			return
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %T is not a *ValidationError wrapping ErrInvalid: %v", err, err)
		}
		if len(ve.Problems) == 0 {
			t.Fatal("ValidationError with no problems")
		}
		for _, p := range ve.Problems {
			if p.File != "dso.yaml" || p.Line < 1 || p.Column < 1 || p.Msg == "" {
				t.Fatalf("problem without a position: %+v", p)
			}
		}
		if strings.Contains(err.Error(), canary) {
			t.Fatalf("error shows the value of VAULT_TOKEN: %v", err)
		}
	})
}
