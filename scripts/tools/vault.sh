#!/usr/bin/env bash
# Builds the HashiCorp Vault server used by the provider tests, once per machine.
#
# There is no Debian package for Vault, so it is built from source as a Go tool in
# the separate module tools/vault (v1.21.0: later 1.21.x releases do not compile
# against any published sdk). A cold build takes about 8 minutes on 2 cores and
# about 4 GB of build cache; the binary is kept in ${DSO_TOOLS_DIR:-~/.cache/dso-tools}
# and reused, so later calls return at once.
#
# Source this file and call dso_build_vault, or run it directly. It prints the
# binary's path on stdout.
set -euo pipefail

DSO_VAULT_VERSION=1.21.0

dso_vault_path() {
	echo "${DSO_TOOLS_DIR:-$HOME/.cache/dso-tools}/vault-${DSO_VAULT_VERSION}"
}

dso_build_vault() {
	local out root tmp
	out="$(dso_vault_path)"
	if [[ -x "$out" ]]; then
		echo "$out"
		return 0
	fi
	root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
	mkdir -p "$(dirname "$out")"
	tmp="$out.tmp.$$"
	echo "building vault ${DSO_VAULT_VERSION} into $out (cold: about 8 minutes)" >&2
	# CGO_ENABLED stays fixed: changing it between builds rebuilds everything.
	(cd "$root/tools/vault" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags='-s -w' \
		-o "$tmp" github.com/hashicorp/vault)
	mv "$tmp" "$out"
	echo "$out"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_vault
fi
