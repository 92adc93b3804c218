#!/usr/bin/env bash
# Makes sure Debian's mmdebstrap is installed: the test bed builds its Debian 12
# image with it from Debian's archive (internal/testbed, DebianImage), because
# there is no registry to pull an image from. The image itself is built by the
# tests, once per machine, and cached under ${DSO_TOOLS_DIR:-~/.cache/dso-tools}.
#
# Source this file and call dso_build_mmdebstrap (prints mmdebstrap's path on
# stdout), or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

dso_build_mmdebstrap() {
	if ! command -v mmdebstrap >/dev/null; then
		dso_apt_install mmdebstrap
	fi
	command -v mmdebstrap
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_mmdebstrap
fi
