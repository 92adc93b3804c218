// Package vault pins the HashiCorp Vault server that the provider tests run.
//
// It is a separate module so that Vault's large dependency graph stays out of
// the main module; scripts/tools/vault.sh builds the binary from here.
package vault
