#!/usr/bin/env bash
# Builds nfpm, the packager scripts/package.sh makes the .deb and .rpm with,
# once per machine.
#
# nfpm is built from source as a Go tool in the separate module tools/nfpm (its
# version is the one in tools/nfpm/go.mod); about a minute cold on 2 cores. The
# binary is kept in ${DSO_TOOLS_DIR:-~/.cache/dso-tools} and reused.
#
# Source this file and call dso_build_nfpm, or run it directly. It prints the
# binary's path on stdout.
set -euo pipefail

dso_build_nfpm() {
	local root version out tmp
	root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
	version="$(cd "$root/tools/nfpm" && go list -m -f '{{.Version}}' github.com/goreleaser/nfpm/v2)" || {
		echo "error: cannot read the nfpm version from tools/nfpm/go.mod" >&2
		return 1
	}
	out="${DSO_TOOLS_DIR:-$HOME/.cache/dso-tools}/nfpm-$version"
	if [[ -x "$out" ]]; then
		echo "$out"
		return 0
	fi
	mkdir -p "$(dirname "$out")"
	tmp="$out.tmp.$$"
	echo "building nfpm $version into $out" >&2
	if ! (cd "$root/tools/nfpm" && CGO_ENABLED=0 nice -n 10 go build -trimpath \
		-ldflags="-s -w -X main.version=$version" -o "$tmp" github.com/goreleaser/nfpm/v2/cmd/nfpm); then
		rm -f "$tmp"
		echo "error: building nfpm failed" >&2
		return 1
	fi
	mv "$tmp" "$out"
	echo "$out"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_nfpm
fi
