#!/usr/bin/env bash
# Makes sure the tools the bootstrap tests drive are there: systemctl and
# systemd-analyze (Debian's systemd package; nothing needs systemd running)
# and groupadd (package passwd).
#
# Source this file and call dso_build_systemd (prints the path of systemctl on
# stdout), or run it directly. Installing needs root (or sudo without a password).
set -euo pipefail

dso_build_systemd() {
	local sudo=() missing=()
	command -v systemctl >/dev/null && command -v systemd-analyze >/dev/null || missing+=(systemd)
	command -v groupadd >/dev/null || missing+=(passwd)
	if ((${#missing[@]} == 0)); then
		command -v systemctl
		return 0
	fi
	if ! command -v apt-get >/dev/null; then
		echo "error: ${missing[*]} missing and there is no apt-get to install them" >&2
		return 1
	fi
	if ((EUID != 0)); then
		if ! sudo -n true 2>/dev/null; then
			echo "error: ${missing[*]} missing; install as root: apt-get install ${missing[*]}" >&2
			return 1
		fi
		sudo=(sudo -n)
	fi
	echo "installing ${missing[*]} with apt-get" >&2
	"${sudo[@]}" apt-get update -qq >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
	command -v systemctl
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	dso_build_systemd
fi
