package awssm

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/retry"
)

// FromConfig builds the provider of a dso.yaml entry of type aws. auth.method
// iam_role (or none) uses the default credential chain, with params.profile
// as the shared profile; access_key takes params.access_key_id,
// params.secret_access_key and optionally params.session_token (write them
// as ${VAR}). address overrides the endpoint.
func FromConfig(name string, pc config.Provider) (*Provider, error) {
	params := pc.Auth.Params
	opts := Options{Name: name, Region: pc.Region, Endpoint: pc.Address, Profile: params["profile"], Retry: retry.FromConfig(pc)}
	switch pc.Auth.Method {
	case "", "iam_role", "default":
	case "access_key":
		id, key := params["access_key_id"], params["secret_access_key"]
		if id == "" || key == "" {
			return nil, fmt.Errorf("provider %q: auth method access_key needs params access_key_id and secret_access_key", name)
		}
		opts.Credentials = credentials.NewStaticCredentialsProvider(id, key, params["session_token"])
	default:
		return nil, fmt.Errorf("provider %q: auth method %q: want iam_role or access_key", name, pc.Auth.Method)
	}
	return New(opts)
}
