// Package awssmtest runs AWS Secrets Manager for tests: the kumo emulator
// in-process, behind a proxy that counts calls by operation and plays what
// kumo lacks: an IAM policy (secrets under "denied/" answer
// AccessDeniedException) and, when asked, BatchGetSecretValue answered from
// kumo's data in the shape AWS documents.
package awssmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
	"github.com/sivchari/kumo"

	"github.com/dso-project/dso/internal/provider/providertest"
)

// Credentials are the static credentials the emulator accepts.
var Credentials = credentials.NewStaticCredentialsProvider("AKIDTEST", "test-secret-key", "")

// Region is the region the tests use.
const Region = "us-east-1"

// Env is a running emulator.
type Env struct {
	KumoURL string                 // the emulator itself
	Proxy   *providertest.Proxy    // the emulator behind the counting proxy
	Admin   *secretsmanager.Client // straight to the emulator, for setup

	batch bool
}

// Operation names the Secrets Manager operation of a request.
func Operation(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "secretsmanager.")
}

// Start runs the emulator until the test ends. With batch, the proxy
// answers BatchGetSecretValue; without, the call fails as on kumo.
func Start(t testing.TB, batch bool) *Env {
	t.Helper()
	k := kumo.NewServer()
	t.Cleanup(k.Close)
	e := &Env{KumoURL: k.URL, batch: batch}
	e.Admin = secretsmanager.New(secretsmanager.Options{Region: Region, Credentials: Credentials, BaseEndpoint: aws.String(k.URL)})
	e.Proxy = providertest.NewProxy(t, k.URL, Operation)
	e.Proxy.SetAnswer(e.answer)
	return e
}

func (e *Env) answer(w http.ResponseWriter, r *http.Request) bool {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if bytes.Contains(body, []byte(`"SecretId":"denied/`)) {
		writeError(w, "AccessDeniedException", "User: arn:aws:iam::000000000000:user/test is not authorized to perform: secretsmanager:"+Operation(r))
		return true
	}
	if e.batch && Operation(r) == "BatchGetSecretValue" {
		e.serveBatch(w, r, body)
		return true
	}
	return false
}

func writeError(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

func (e *Env) serveBatch(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct{ SecretIdList []string }
	if err := json.Unmarshal(body, &in); err != nil || len(in.SecretIdList) == 0 || len(in.SecretIdList) > 20 {
		writeError(w, "InvalidParameterException", "SecretIdList must hold 1 to 20 ids")
		return
	}
	type entry struct {
		ARN, Name, VersionId string
		SecretString         *string `json:",omitempty"`
		SecretBinary         []byte  `json:",omitempty"`
	}
	type apiErr struct{ SecretId, ErrorCode, Message string }
	var out struct {
		SecretValues []entry
		Errors       []apiErr
	}
	for _, id := range in.SecretIdList {
		v, err := e.Admin.GetSecretValue(r.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
		var ae smithy.APIError
		switch {
		case errors.As(err, &ae):
			out.Errors = append(out.Errors, apiErr{id, ae.ErrorCode(), ae.ErrorMessage()})
		case err != nil:
			out.Errors = append(out.Errors, apiErr{id, "InternalServiceError", err.Error()})
		default:
			out.SecretValues = append(out.SecretValues, entry{aws.ToString(v.ARN), aws.ToString(v.Name), aws.ToString(v.VersionId), v.SecretString, v.SecretBinary})
		}
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

// Put creates name or adds a version to it and returns the version id;
// a value that is not UTF-8 goes in SecretBinary.
func (e *Env) Put(t testing.TB, name string, value []byte) string {
	t.Helper()
	v, err := e.put(name, value)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *Env) put(name string, value []byte) (string, error) {
	ctx := context.Background()
	var str *string
	var bin []byte
	if utf8.Valid(value) {
		str = aws.String(string(value))
	} else {
		bin = value
	}
	out, err := e.Admin.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(name), SecretString: str, SecretBinary: bin})
	if err == nil {
		return aws.ToString(out.VersionId), nil
	}
	c, err := e.Admin.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(name), SecretString: str, SecretBinary: bin})
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", name, err)
	}
	return aws.ToString(c.VersionId), nil
}
