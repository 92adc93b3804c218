#!/usr/bin/env bash
# Makes sure HAProxy (Debian's haproxy, 2.6 in bookworm) is there: the proxy
# benchmark (test/bench/proxy_test.go) runs it in `mode tcp` beside ours.
#
# Source this file and call dso_build_haproxy (prints the binary's path on
# stdout), or run it directly. Installing needs root (or sudo without a
# password). The benchmark runs the binary with its own configuration; the
# package's service is left as the package sets it up (Debian's default
# configuration listens on no port).
set -euo pipefail

dso_build_haproxy() {
	local sudo=() bin=/usr/sbin/haproxy
	if [[ -x $bin ]] && "$bin" -v >/dev/null 2>&1; then
		echo "$bin"
		return 0
	fi
	if ! command -v apt-get >/dev/null; then
		echo "error: $bin is missing and there is no apt-get to install haproxy" >&2
		return 1
	fi
	if ((EUID != 0)); then
		if ! sudo -n true 2>/dev/null; then
			echo "error: $bin is missing; install it as root: apt-get install haproxy" >&2
			return 1
		fi
		sudo=(sudo -n)
	fi
	echo "installing haproxy with apt-get" >&2
	"${sudo[@]}" apt-get update -qq >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >&2
	echo "$bin"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_haproxy
fi
