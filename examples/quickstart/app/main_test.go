package main

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// get asks the handler for path with the environment env.
func get(t *testing.T, env map[string]string, path string) (int, string) {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	rec := httptest.NewRecorder()
	newHandler(lookup).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func prefix(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])[:prefixLen]
}

func TestReportShowsSecretsWithoutValues(t *testing.T) {
	password := "dso-canary-password-3f9a1c"
	apiKey := "dso-canary-apikey-77b2e0\n"
	file := filepath.Join(t.TempDir(), "API_KEY_FILE")
	if err := os.WriteFile(file, []byte(apiKey), 0o400); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, map[string]string{"DB_PASSWORD": password, "API_KEY_FILE": file}, "/")
	if code != http.StatusOK {
		t.Fatalf("status %d:\n%s", code, body)
	}
	for _, want := range []string{
		"DB_PASSWORD: set (26 bytes, sha256 prefix " + prefix(password) + ")",
		"API key file: " + file + " (25 bytes, sha256 prefix " + prefix(apiKey) + ")",
		"Both secrets were received",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("report lacks %q:\n%s", want, body)
		}
	}
	for _, canary := range []string{"canary-password", "canary-apikey"} {
		if strings.Contains(body, canary) {
			t.Errorf("report shows a secret value:\n%s", body)
		}
	}
}

func TestReportSaysWhatIsMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no password", map[string]string{"API_KEY_FILE": missing}, "DB_PASSWORD: not set"},
		{"empty password", map[string]string{"DB_PASSWORD": ""}, "DB_PASSWORD: not set"},
		{"no file variable", map[string]string{"DB_PASSWORD": "x"}, "API_KEY_FILE is not set"},
		{"no file", map[string]string{"DB_PASSWORD": "x", "API_KEY_FILE": missing}, missing + " is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, tc.env, "/")
			if code != http.StatusServiceUnavailable {
				t.Errorf("status %d, want 503", code)
			}
			if !strings.Contains(body, tc.want) || strings.Contains(body, "Both secrets were received") {
				t.Errorf("report does not say %q:\n%s", tc.want, body)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	if code, body := get(t, nil, "/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, _ := get(t, nil, "/other"); code != http.StatusNotFound {
		t.Errorf("GET /other: status %d, want 404", code)
	}
}
