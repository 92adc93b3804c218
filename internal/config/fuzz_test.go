package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that the loader never panics, that every failure is a
// *ValidationError wrapping ErrInvalid whose problems all have a file and a
// position, and that the value of VAULT_TOKEN (a secret-looking variable)
// shows neither in an error nor in what Redacted returns, wherever the
// input expands it. Seeds: every file of testdata, and the variable in
// each kind of place.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"providers:\n  v:\n    type: vault\n    address: https://vault:8200\n    auth:\n      method: token\n      params:\n        token: ${VAULT_TOKEN}\n",
		"providers:\n  v:\n    type: vault\n    address: https://${VAULT_TOKEN}/\n",
		"providers:\n  v:\n    type: vault\n    auth:\n      params:\n        role: x-${VAULT_TOKEN}-y\n",
		"agent:\n  api:\n    token: ${VAULT_TOKEN}\n",
		"agent:\n  notify:\n    - url: https://hooks.example/${VAULT_TOKEN}\n      secret: ${VAULT_TOKEN}\n",
		"secrets:\n  - name: ${VAULT_TOKEN}\n    mappings:\n      ${VAULT_TOKEN}: a/b\n",
		"defaults:\n  provider: ${VAULT_TOKEN:-local}\n",
	} {
		f.Add([]byte(s))
	}
	l := testLoader()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := l.Parse("dso.yaml", data)
		if err == nil {
			if c == nil || c.File != "dso.yaml" {
				t.Fatalf("no error and config %v", c)
			}
			shown, jerr := json.Marshal(c.Redacted())
			if jerr != nil {
				t.Fatalf("the redacted config does not encode: %v", jerr)
			}
			if bytes.Contains(shown, []byte(canary)) && !spellsCanary(data) {
				t.Fatalf("Redacted shows the value of VAULT_TOKEN: %s", shown)
			}
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
		if strings.Contains(err.Error(), canary) && !spellsCanary(data) {
			t.Fatalf("error shows the value of VAULT_TOKEN: %v", err)
		}
	})
}

// spellsCanary reports whether the input holds a piece of the canary
// itself (6 bytes or more): then it may show without any leak.
func spellsCanary(data []byte) bool {
	for i := 0; i+6 <= len(canary); i++ {
		if bytes.Contains(data, []byte(canary[i:i+6])) {
			return true
		}
	}
	return false
}
