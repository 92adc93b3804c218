#!/usr/bin/env bash
# Makes sure Docker Compose v2 (the Go Compose, a Docker CLI plugin) is installed.
#
# Debian only packages the Python docker-compose 1.x, so Compose is built from
# source as a Go tool in the separate module tools/compose (its version is the
# one in tools/compose/go.mod). A cold build takes a minute or two on 2 cores.
#
# Source this file and call dso_build_compose (finds Compose v2, or builds it into
# the user's CLI plugin directory; prints the plugin's path on stdout) or
# dso_install_compose DIR (builds it into DIR), or run it directly.
set -euo pipefail

# dso_compose_dirs lists the CLI plugin directories in the order the docker CLI
# searches them.
dso_compose_dirs() {
	echo "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
	echo /usr/local/lib/docker/cli-plugins
	echo /usr/local/libexec/docker/cli-plugins
	echo /usr/lib/docker/cli-plugins
	echo /usr/libexec/docker/cli-plugins
}

# dso_compose_is_v2 BIN succeeds when BIN is Compose v2 or later.
dso_compose_is_v2() {
	local v
	v="$("$1" version --short 2>/dev/null)" || return 1
	v="${v#v}"
	[[ "${v%%.*}" =~ ^[0-9]+$ ]] && ((${v%%.*} >= 2))
}

# dso_find_compose prints the path of an installed Compose v2 plugin, if any.
dso_find_compose() {
	local dir
	while read -r dir; do
		if [[ -x "$dir/docker-compose" ]] && dso_compose_is_v2 "$dir/docker-compose"; then
			echo "$dir/docker-compose"
			return 0
		fi
	done < <(dso_compose_dirs)
	return 1
}

# dso_install_compose DIR builds Compose from tools/compose into DIR/docker-compose.
dso_install_compose() {
	local dir="$1" root version tmp
	root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
	if ! version="$(cd "$root/tools/compose" && go list -m -f '{{.Version}}' github.com/docker/compose/v5)"; then
		echo "error: cannot read the Compose version from tools/compose/go.mod" >&2
		return 1
	fi
	mkdir -p "$dir" || return 1
	tmp="$dir/.docker-compose.tmp.$$"
	echo "building Docker Compose $version from tools/compose into $dir (cold: a minute or two)" >&2
	if ! (cd "$root/tools/compose" && CGO_ENABLED=0 go build -trimpath \
		-ldflags="-s -w -X github.com/docker/compose/v5/internal.Version=$version" \
		-o "$tmp" github.com/docker/compose/v5/cmd); then
		rm -f "$tmp"
		echo "error: building Docker Compose failed" >&2
		return 1
	fi
	mv -f "$tmp" "$dir/docker-compose"
	echo "installed $dir/docker-compose ($("$dir/docker-compose" version --short))" >&2
}

# dso_build_compose prints the path of Compose v2, building it into the user's
# CLI plugin directory when none is installed.
dso_build_compose() {
	local dir
	if dso_find_compose; then
		return 0
	fi
	dir="$(dso_compose_dirs | head -n 1)"
	dso_install_compose "$dir"
	echo "$dir/docker-compose"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_compose
fi
