package resolve

import (
	"os"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/local"
)

// Default returns the registry of the providers built into dso.
func Default() *Registry {
	r := &Registry{}
	mustRegister(r, config.ProviderLocal, buildLocal)
	return r
}

func mustRegister(r *Registry, t config.ProviderType, b Builder) {
	if err := r.Register(t, b); err != nil {
		panic(err)
	}
}

// buildLocal opens the local vault named by the provider entry, else the
// default one (~/.dso, or DSO_VAULT_FILE and DSO_MASTER_KEY_FILE).
func buildLocal(_ string, pc config.Provider) (provider.Provider, error) {
	paths, err := local.DefaultPaths(os.Getenv)
	if err != nil {
		return nil, err
	}
	if pc.VaultFile != "" {
		paths.Vault = pc.VaultFile
	}
	if pc.MasterKeyFile != "" {
		paths.KeyFile = pc.MasterKeyFile
	}
	key, err := local.KeySource{KeyFile: paths.KeyFile, Getenv: os.Getenv}.Load(paths.Vault)
	if err != nil {
		return nil, err
	}
	return local.New(paths.Vault, key), nil
}
