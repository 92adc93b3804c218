#!/usr/bin/env bash
# The project's test command: installs what the tests need (each tool in
# scripts/tools/NAME.sh, whose function dso_build_NAME installs it idempotently
# and prints its path, exported to the tests as DSO_NAME_BIN), then runs
# `go mod tidy -diff`, `go vet ./...` and `go test ./...` against the real
# Docker engine.
#
#   scripts/test.sh                      everything
#   scripts/test.sh -run TestX ./pkg/... go test arguments instead of ./...
#
# Under CI=true tests that need Docker fail instead of skipping when the engine
# is unreachable. Exits non-zero when go.mod is not tidy, or vet or any
# test fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# install_tools sources each scripts/tools/NAME.sh and runs its dso_build_NAME,
# exporting the printed path as DSO_NAME_BIN.
install_tools() {
	local script name path rc
	for script in scripts/tools/*.sh; do
		name="$(basename "$script" .sh)"
		say "tool: $name"
		# shellcheck source=/dev/null
		source "$script"
		# Run apart from `||` so that errexit holds inside the tool's function.
		set +e
		path="$(
			set -e
			"dso_build_$name"
		)"
		rc=$?
		set -e
		((rc == 0)) || die "installing the test tool $name failed (see above)"
		export "DSO_${name^^}_BIN=$path"
		echo "    $path" >&2
	done
}

main() {
	local status=0 args=("$@")
	cd "$DSO_ROOT"
	dso_need_go
	# No test may reach a cloud: the AWS SDK would otherwise try the EC2
	# metadata address when it finds no credentials.
	export AWS_EC2_METADATA_DISABLED=true

	install_tools

	say "go mod tidy -diff"
	if ! go mod tidy -diff; then
		say "go.mod or go.sum is not tidy: run go mod tidy and commit the result"
		status=1
	fi

	say "go vet ./..."
	go vet ./... || status=1

	((${#args[@]})) || args=(./...)
	say "go test -count=1 -timeout 60m ${args[*]}"
	go test -count=1 -timeout 60m "${args[@]}" || status=1

	if ((status)); then
		say "FAILED"
	else
		say "all passed"
	fi
	return "$status"
}

# All of the script is read before main runs, so editing it during a run
# does not change that run.
main "$@"
exit $?
