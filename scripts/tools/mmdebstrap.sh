#!/usr/bin/env bash
# Makes sure Debian's mmdebstrap is installed: the test bed builds its Debian 12
# images with it from Debian's archive (internal/testbed, DebianImage), because
# there is no registry to pull an image from. The image itself is built by the
# tests, once per machine, and cached under ${DSO_TOOLS_DIR:-~/.cache/dso-tools}.
#
# Source this file and call dso_build_mmdebstrap (prints mmdebstrap's path on
# stdout), or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail

dso_build_mmdebstrap() {
	local sudo=()
	if command -v mmdebstrap >/dev/null; then
		command -v mmdebstrap
		return 0
	fi
	if ! command -v apt-get >/dev/null; then
		echo "error: mmdebstrap is missing and there is no apt-get to install it" >&2
		return 1
	fi
	if ((EUID != 0)); then
		if ! sudo -n true 2>/dev/null; then
			echo "error: mmdebstrap is missing; install it as root: apt-get install mmdebstrap" >&2
			return 1
		fi
		sudo=(sudo -n)
	fi
	echo "installing mmdebstrap with apt-get" >&2
	"${sudo[@]}" apt-get update -qq >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >&2
	command -v mmdebstrap
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_mmdebstrap
fi
