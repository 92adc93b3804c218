#!/usr/bin/env bash
# Makes sure the tools the bootstrap tests drive are there: systemctl and
# systemd-analyze (Debian's systemd package; nothing needs systemd running)
# and groupadd (package passwd).
#
# Source this file and call dso_build_systemd (prints the path of systemctl on
# stdout), or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

dso_build_systemd() {
	local missing=()
	command -v systemctl >/dev/null && command -v systemd-analyze >/dev/null || missing+=(systemd)
	command -v groupadd >/dev/null || missing+=(passwd)
	if ((${#missing[@]})); then
		dso_apt_install "${missing[@]}"
	fi
	command -v systemctl
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_systemd
fi
