#!/usr/bin/env bash
# Makes sure HAProxy (Debian's haproxy, 2.6 in bookworm) is installed: the
# proxy benchmark (test/bench/proxy_test.go) runs it in `mode tcp` beside ours,
# with its own configuration. The package's service is left as the package sets
# it up (Debian's default configuration listens on no port).
#
# Source this file and call dso_build_haproxy (prints the binary's path on
# stdout), or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

dso_build_haproxy() {
	local bin=/usr/sbin/haproxy
	if ! "$bin" -v >/dev/null 2>&1; then
		dso_apt_install haproxy
	fi
	"$bin" -v >/dev/null
	echo "$bin"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_haproxy
fi
