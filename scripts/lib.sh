# Shared by the scripts in this folder (sourced, not run): messages, the Go
# toolchain on PATH, and the version stamped into our binaries.

shopt -s inherit_errexit
DSO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# dso_need_go puts Go on PATH (the toolchain lives in /usr/local/go here) and
# fails clearly when there is none.
dso_need_go() {
	if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
		PATH="/usr/local/go/bin:$PATH"
	fi
	command -v go >/dev/null || die "Go is not installed (expected go on PATH or in /usr/local/go/bin)"
}

# dso_version prints the version of what this checkout builds: X.Y.Z when
# HEAD is the tag vX.Y.Z, else X.Y.Z+gitN.gHASH (N commits after the last
# such tag, 0.0.0 when there is none), which dpkg and rpm sort after X.Y.Z;
# ".dirty" is added when the work tree has changes. "dev" outside git.
dso_version() {
	local d base n hash dirty=""
	git -C "$DSO_ROOT" rev-parse HEAD >/dev/null 2>&1 || {
		echo dev
		return 0
	}
	if d="$(git -C "$DSO_ROOT" describe --tags --match 'v[0-9]*' --long 2>/dev/null)"; then
		# vX.Y.Z-N-gHASH
		hash="${d##*-}"
		d="${d%-*}"
		n="${d##*-}"
		base="${d%-*}"
		base="${base#v}"
	else
		base=0.0.0
		n="$(git -C "$DSO_ROOT" rev-list --count HEAD)"
		hash="g$(git -C "$DSO_ROOT" rev-parse --short HEAD)"
	fi
	git -C "$DSO_ROOT" diff --quiet HEAD 2>/dev/null || dirty=.dirty
	if [[ "$n" == 0 && -z "$dirty" ]]; then
		echo "$base"
	else
		echo "$base+git$n.$hash$dirty"
	fi
}

# dso_ldflags prints the -ldflags that stamp version and commit into our binaries.
dso_ldflags() {
	local version commit pkg=github.com/dso-project/dso/internal/buildinfo
	version="$(dso_version)"
	commit="$(git -C "$DSO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
	echo "-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit"
}

# dso_apt_install PACKAGE... installs Debian packages with apt-get, as root or
# through sudo without a password; it fails with the command to run by hand.
dso_apt_install() {
	local sudo=()
	if ! command -v apt-get >/dev/null; then
		echo "error: $* missing and there is no apt-get to install it" >&2
		return 1
	fi
	if ((EUID != 0)); then
		if ! sudo -n true 2>/dev/null; then
			echo "error: $* missing; install as root: apt-get install $*" >&2
			return 1
		fi
		sudo=(sudo -n)
	fi
	echo "installing $* with apt-get" >&2
	"${sudo[@]}" apt-get update -qq >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
