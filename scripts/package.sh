#!/usr/bin/env bash
# Builds the release files of this checkout into dist/ (or OUTDIR):
#   dso_VERSION-1_amd64.deb, dso_VERSION-1_arm64.deb       Debian/Ubuntu packages
#   dso-VERSION-1.x86_64.rpm, dso-VERSION-1.aarch64.rpm    RPM packages
#   dso_VERSION_linux_amd64.tar.gz, …_linux_arm64.tar.gz   archives for Linux
#   dso_VERSION_darwin_amd64.tar.gz, …_darwin_arm64.tar.gz archives for macOS (the
#       plugin for macOS with a Linux dso-init of the same architecture, for the
#       containers of Docker Desktop's Linux VM)
#   SHA256SUMS
# VERSION comes from git (see dso_version in scripts/lib.sh). The packages carry
# docker-dso and dso-init in /usr/libexec/docker/cli-plugins, a /usr/bin/dso link,
# dso-agent.service (rendered by `docker dso system unit`, the same code as
# `docker dso bootstrap agent`) and cobra's bash, zsh and fish completions.
#
#   scripts/package.sh [--arch amd64|arm64]... [--only deb|rpm|tar]... [OUTDIR]
#
# --arch and --only narrow what is built (default: every architecture and kind);
# `--arch amd64 --only deb` makes the one .deb a test installs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$DSO_ROOT/scripts/tools/nfpm.sh"

# The packages install the plugin where distribution packages put Docker CLI
# plugins; the archives suggest the directory for hand-installed ones.
PKG_PLUGIN_DIR=/usr/libexec/docker/cli-plugins
ARCHIVE_PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

# build GOOS GOARCH PKG OUT builds one static binary stamped with the version.
build() {
	CGO_ENABLED=0 GOOS="$1" GOARCH="$2" nice go build -trimpath -ldflags="$ldflags" -o "$4" "$3" ||
		die "building $3 for $1/$2 failed"
}

# stage DIR GOOS GOARCH fills DIR with one platform's files: docker-dso for
# GOOS, dso-init for Linux (containers are Linux), the completions, LICENSE
# and README.md.
stage() {
	local dir="$1" goos="$2" goarch="$3"
	mkdir -p "$dir"
	build "$goos" "$goarch" ./cmd/docker-dso "$dir/docker-dso"
	build linux "$goarch" ./cmd/dso-init "$dir/dso-init"
	cp -r "$work/completions" "$dir/completions"
	cp LICENSE README.md "$dir/"
}

# unit DIR BINARY writes DIR/dso-agent.service running BINARY.
unit() {
	"$host_bin" system unit --binary "$2" >"$1/dso-agent.service"
}

# archive DIR NAME writes OUT/NAME.tar.gz holding DIR as NAME/, owned by root,
# in name order.
archive() {
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
		-C "$(dirname "$1")" --transform "s,^$(basename "$1"),$2," \
		-czf "$out/$2.tar.gz" "$(basename "$1")"
}

usage() {
	sed -n '2,22s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

# wanted ITEM LIST... succeeds when ITEM is one of LIST.
wanted() {
	local item="$1" x
	shift
	for x in "$@"; do [[ "$x" == "$item" ]] && return 0; done
	return 1
}

main() {
	local archs=() kinds=() nfpm arch
	while (($#)); do
		case "$1" in
		--arch)
			[[ "${2:-}" == amd64 || "${2:-}" == arm64 ]] || { usage; die "--arch wants amd64 or arm64, not '${2:-}'"; }
			archs+=("$2")
			shift
			;;
		--only)
			[[ "${2:-}" == deb || "${2:-}" == rpm || "${2:-}" == tar ]] || { usage; die "--only wants deb, rpm or tar, not '${2:-}'"; }
			kinds+=("$2")
			shift
			;;
		-h | --help)
			usage
			return 0
			;;
		-*)
			usage
			die "unknown option: $1"
			;;
		*) break ;;
		esac
		shift
	done
	((${#archs[@]})) || archs=(amd64 arm64)
	((${#kinds[@]})) || kinds=(deb rpm tar)
	cd "$DSO_ROOT"
	dso_need_go
	out="${1:-$DSO_ROOT/dist}"
	mkdir -p "$out"
	out="$(cd "$out" && pwd)"
	version="$(dso_version)"
	ldflags="$(dso_ldflags)"
	mtime="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
	nfpm="$(dso_build_nfpm)"
	work="$(mktemp -d)"
	trap 'rm -rf "$work"' EXIT
	say "packaging dso $version into $out"

	# A binary for this machine renders the unit and the completions.
	host_bin="$work/host/docker-dso"
	build "$(go env GOOS)" "$(go env GOARCH)" ./cmd/docker-dso "$host_bin"
	mkdir -p "$work/completions"
	"$host_bin" completion bash >"$work/completions/dso.bash"
	"$host_bin" completion zsh >"$work/completions/_dso"
	"$host_bin" completion fish >"$work/completions/dso.fish"

	for arch in "${archs[@]}"; do
		stage "$work/pkg_$arch" linux "$arch"
		unit "$work/pkg_$arch" "$PKG_PLUGIN_DIR/docker-dso"
		for packager in deb rpm; do
			wanted "$packager" "${kinds[@]}" || continue
			DSO_VERSION="$version" DSO_ARCH="$arch" DSO_STAGE="$work/pkg_$arch" \
				"$nfpm" package --config scripts/nfpm.yaml --packager "$packager" --target "$out/" >&2 ||
				die "nfpm could not make the $packager for $arch"
		done
		wanted tar "${kinds[@]}" || continue
		cp -a "$work/pkg_$arch" "$work/linux_$arch"
		unit "$work/linux_$arch" "$ARCHIVE_PLUGIN_DIR/docker-dso"
		archive "$work/linux_$arch" "dso_${version}_linux_$arch"
		stage "$work/darwin_$arch" darwin "$arch"
		archive "$work/darwin_$arch" "dso_${version}_darwin_$arch"
	done

	(cd "$out" && rm -f SHA256SUMS && sha256sum -- *"$version"* >SHA256SUMS)
	say "done:"
	(cd "$out" && ls -l -- *"$version"* SHA256SUMS >&2)
}

main "$@"
