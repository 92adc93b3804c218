#!/usr/bin/env bash
# Makes sure the rpm command is there (Debian package rpm): the release test
# reads the .rpm packages' headers and file lists with it, as a user would.
#
# Source this file and call dso_build_rpm (prints the path of rpm on stdout),
# or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

dso_build_rpm() {
	command -v rpm >/dev/null || dso_apt_install rpm
	command -v rpm
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_rpm
fi
