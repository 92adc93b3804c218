#!/usr/bin/env bash
# Makes sure Debian's static busybox (/bin/busybox, package busybox-static) is
# there: the test bed copies it into FROM-scratch images to get a shell.
#
# Source this file and call dso_build_busybox (prints /bin/busybox on stdout),
# or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

dso_build_busybox() {
	if ! { [[ -x /bin/busybox ]] && /bin/busybox true 2>/dev/null; }; then
		dso_apt_install busybox-static
	fi
	echo /bin/busybox
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_busybox
fi
