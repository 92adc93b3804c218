package awssm_test

import (
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/awssm"
)

func TestFromConfig(t *testing.T) {
	if _, err := awssm.FromConfig("aws", config.Provider{Region: "us-east-1", Auth: config.Auth{Method: "iam_role"}}); err != nil {
		t.Errorf("seed's iam_role example: %v", err)
	}
	_, err := awssm.FromConfig("aws", config.Provider{Region: "us-east-1", Auth: config.Auth{Method: "access_key"}})
	if err == nil || !strings.Contains(err.Error(), "access_key_id") {
		t.Errorf("access_key without keys: %v", err)
	}
	_, err = awssm.FromConfig("aws", config.Provider{Region: "us-east-1", Auth: config.Auth{Method: "password"}})
	if err == nil || !strings.Contains(err.Error(), `auth method "password"`) {
		t.Errorf("unknown method: %v", err)
	}
}
