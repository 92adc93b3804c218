package azurekv

import (
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/retry"
)

// FromConfig builds the provider of a dso.yaml entry of type azure: address
// is the vault URL. auth.method managed_identity, workload_identity,
// azure_cli or none use DefaultAzureCredential (which also reads
// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET); client_secret
// takes params.tenant_id, params.client_id and params.client_secret.
func FromConfig(name string, pc config.Provider) (*Provider, error) {
	opts := Options{Name: name, VaultURL: pc.Address, Retry: retry.FromConfig(pc)}
	params := pc.Auth.Params
	switch pc.Auth.Method {
	case "", "default", "managed_identity", "workload_identity", "azure_cli":
	case "client_secret":
		cred, err := azidentity.NewClientSecretCredential(params["tenant_id"], params["client_id"], params["client_secret"], nil)
		if err != nil {
			return nil, fmt.Errorf("provider %q: client_secret credential: %v", name, err)
		}
		opts.Credential = cred
	default:
		return nil, fmt.Errorf("provider %q: auth method %q: want managed_identity, workload_identity, azure_cli or client_secret", name, pc.Auth.Method)
	}
	return New(opts)
}
