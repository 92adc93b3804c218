#!/usr/bin/env bash
# Makes sure Debian's static busybox (/bin/busybox, package busybox-static) is
# there: the test bed copies it into FROM-scratch images to get a shell.
#
# Source this file and call dso_build_busybox (prints /bin/busybox on stdout),
# or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail

dso_build_busybox() {
	local sudo=()
	if [[ -x /bin/busybox ]] && /bin/busybox true 2>/dev/null; then
		echo /bin/busybox
		return 0
	fi
	if ! command -v apt-get >/dev/null; then
		echo "error: /bin/busybox is missing and there is no apt-get to install busybox-static" >&2
		return 1
	fi
	if ((EUID != 0)); then
		if ! sudo -n true 2>/dev/null; then
			echo "error: /bin/busybox is missing; install it as root: apt-get install busybox-static" >&2
			return 1
		fi
		sudo=(sudo -n)
	fi
	echo "installing busybox-static with apt-get" >&2
	"${sudo[@]}" apt-get update -qq >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
	echo /bin/busybox
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_busybox
fi
