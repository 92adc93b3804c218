package resolve

import (
	"fmt"
	"os"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/awssm"
	"github.com/dso-project/dso/internal/provider/azurekv"
	"github.com/dso-project/dso/internal/provider/local"
	"github.com/dso-project/dso/internal/provider/plugin"
	"github.com/dso-project/dso/internal/provider/vault"
)

// Default returns the registry of the providers built into dso: the local
// vault, HashiCorp Vault, AWS Secrets Manager, Azure Key Vault and external
// plugins.
func Default() *Registry {
	r := &Registry{}
	mustRegister(r, config.ProviderLocal, buildLocal)
	mustRegister(r, config.ProviderVault, typed(vault.FromConfig))
	mustRegister(r, config.ProviderAWS, typed(awssm.FromConfig))
	mustRegister(r, config.ProviderAzure, typed(azurekv.FromConfig))
	mustRegister(r, config.ProviderPlugin, typed(plugin.FromConfig))
	return r
}

func mustRegister(r *Registry, t config.ProviderType, b Builder) {
	if err := r.Register(t, b); err != nil {
		panic(err)
	}
}

// typed adapts a constructor returning a concrete provider type, so that a
// failed build gives a nil interface and not a typed nil.
func typed[P provider.Provider](build func(string, config.Provider) (P, error)) Builder {
	return func(name string, pc config.Provider) (provider.Provider, error) {
		p, err := build(name, pc)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

// buildLocal opens the local vault named by the provider entry, else the
// default one (~/.dso, or DSO_VAULT_FILE and DSO_MASTER_KEY_FILE).
func buildLocal(name string, pc config.Provider) (provider.Provider, error) {
	// A provider entry naming both files needs no $HOME (a system service
	// has none).
	paths, err := local.ResolvePaths(pc.VaultFile, pc.MasterKeyFile, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	key, err := local.KeySource{KeyFile: paths.KeyFile, Getenv: os.Getenv}.Load(paths.Vault)
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	return local.New(paths.Vault, key), nil
}
