package vault

import (
	"fmt"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/retry"
)

// FromConfig builds the provider of a dso.yaml entry of type vault. auth.method
// is token (params.token, else VAULT_TOKEN) or approle (params.role_id and
// params.secret_id or params.secret_id_file; params.mount, default
// "approle"); params.namespace sets the namespace.
func FromConfig(name string, pc config.Provider) (*Provider, error) {
	params := pc.Auth.Params
	opts := Options{
		Name:          name,
		Address:       pc.Address,
		Namespace:     params["namespace"],
		CAFile:        pc.TLS.CAFile,
		TLSSkipVerify: pc.TLS.InsecureSkipVerify,
		Retry:         retry.FromConfig(pc),
	}
	if opts.Address == "" {
		opts.Address = params["address"]
	}
	switch pc.Auth.Method {
	case "", "token":
		opts.Token = params["token"]
	case "approle":
		opts.AppRole = &AppRole{Mount: params["mount"], RoleID: params["role_id"], SecretID: params["secret_id"], SecretIDFile: params["secret_id_file"]}
	default:
		return nil, fmt.Errorf("provider %q: auth method %q: want token or approle", name, pc.Auth.Method)
	}
	return New(opts)
}
