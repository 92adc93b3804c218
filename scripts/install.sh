#!/usr/bin/env bash
# Builds DSO and installs it as a Docker CLI plugin:
#   docker-dso  the plugin (`docker dso ...`), from ./cmd/docker-dso
#   dso-init    the static init run inside containers, from ./cmd/dso-init
# and, when `docker compose` is not Compose v2, builds Compose v2 from
# tools/compose and installs it beside them.
#
#   scripts/install.sh            for the current user, into ~/.docker/cli-plugins
#   scripts/install.sh --system   for everyone (as root), into /usr/local/lib/docker/cli-plugins
#
# Safe to run again: it rebuilds and replaces the binaries in place. Then it runs the quickstart demo, scripts/demo.sh (--no-demo: don't).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$DSO_ROOT/scripts/tools/compose.sh"

usage() {
	sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

dest="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
while (($#)); do
	case "$1" in
	--system)
		((EUID == 0)) || die "--system installs into /usr/local/lib/docker/cli-plugins and must run as root"
		dest=/usr/local/lib/docker/cli-plugins
		;;
	--no-demo) no_demo=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage
		die "unknown argument: $1"
		;;
	esac
	shift
done

cd "$DSO_ROOT"
dso_need_go
mkdir -p "$dest" || die "cannot create $dest"

# install_binary NAME PKG builds PKG and moves it into place as $dest/NAME.
install_binary() {
	local name="$1" pkg="$2" tmp
	tmp="$dest/.$name.tmp.$$"
	say "building $name from $pkg"
	if ! CGO_ENABLED=0 go build -trimpath -ldflags="$(dso_ldflags)" -o "$tmp" "$pkg"; then
		rm -f "$tmp"
		die "building $name failed"
	fi
	chmod 0755 "$tmp"
	mv -f "$tmp" "$dest/$name"
	say "installed $dest/$name"
}

install_binary docker-dso ./cmd/docker-dso
if [[ -d cmd/dso-init ]]; then
	install_binary dso-init ./cmd/dso-init
fi

if command -v docker >/dev/null && v="$(docker compose version --short 2>/dev/null)" && [[ "${v#v}" != 1.* ]]; then
	say "docker compose is ${v#v}: kept"
elif compose="$(dso_find_compose)"; then
	say "Compose v2 found at $compose: kept"
else
	dso_install_compose "$dest" || die "installing Docker Compose v2 failed"
fi

if command -v docker >/dev/null; then
	say "done: $(docker dso version 2>/dev/null | head -n 1 || echo "run 'docker dso --help'")"
else
	say "done (the docker CLI is not on PATH; it finds the plugin in $dest)"
fi
((${no_demo:-0})) || "$DSO_ROOT/scripts/demo.sh" || die "the quickstart demo failed (DSO itself is installed); run scripts/demo.sh again, or skip it with --no-demo"
