package awssm_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/dso-project/dso/internal/provider/providertest"
)

// ServeBatch makes px answer BatchGetSecretValue, which kumo lacks, from
// kumo's own data through GetSecretValue, in the shape AWS documents.
func ServeBatch(t testing.TB, px *providertest.Proxy, admin *secretsmanager.Client) {
	px.SetAnswer(func(w http.ResponseWriter, r *http.Request) bool {
		if operation(r) != "BatchGetSecretValue" {
			return false
		}
		var in struct{ SecretIdList []string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || len(in.SecretIdList) > 20 {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"__type":"InvalidParameterException","message":"bad SecretIdList"}`))
			return true
		}
		type entry struct {
			ARN, Name, VersionId, SecretString string
			SecretBinary                       []byte `json:",omitempty"`
		}
		type apiErr struct{ SecretId, ErrorCode, Message string }
		var out struct {
			SecretValues []entry
			Errors       []apiErr
		}
		for _, id := range in.SecretIdList {
			v, err := admin.GetSecretValue(r.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
			var ae smithy.APIError
			if errors.As(err, &ae) {
				out.Errors = append(out.Errors, apiErr{id, ae.ErrorCode(), ae.ErrorMessage()})
				continue
			} else if err != nil {
				t.Errorf("batch emulation: %v", err)
				continue
			}
			out.SecretValues = append(out.SecretValues, entry{aws.ToString(v.ARN), aws.ToString(v.Name), aws.ToString(v.VersionId), aws.ToString(v.SecretString), v.SecretBinary})
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		json.NewEncoder(w).Encode(out)
		return true
	})
}
