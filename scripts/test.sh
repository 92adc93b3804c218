#!/usr/bin/env bash
# The project's test command: installs what the tests need (each tool in
# scripts/tools/NAME.sh, whose function dso_build_NAME installs it idempotently
# and prints its path, exported to the tests as DSO_NAME_BIN), then runs
# `go mod tidy -diff`, `go vet ./...` and `go test ./...` against the real
# Docker engine, the unit tests again under the race detector, and each fuzz
# target for a short time.
#
#   scripts/test.sh                      everything
#   scripts/test.sh -run TestX ./pkg/... go test arguments instead of ./...
#                                        (no race run, no fuzzing)
#
# DSO_FUZZTIME (default 10s) is how long each fuzz target runs.
# Under CI (CI set to any true value: 1, true...) a test that lacks the engine,
# a tool or root fails instead of skipping. Exits non-zero when go.mod is not
# tidy, or vet, any test or any fuzz target fails.
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

# unit_packages lists every package but the end-to-end tests, benchmarks and
# the release test (which builds every release file: minutes, no Go code of
# its own under test).
unit_packages() {
	go list ./... | grep -v -e '/test/e2e$' -e '/test/bench$' -e '/test/release$'
}

# fuzz_briefly runs each fuzz target of the module (func FuzzX in a _test.go
# file) on its own for DSO_FUZZTIME, starting from its seeds.
fuzz_briefly() {
	local file name status=0
	while IFS=: read -r file name; do
		name="${name#func }"
		say "fuzz: $name in ./$(dirname "$file") for ${DSO_FUZZTIME:-10s}"
		fuzz_one "$name" "./$(dirname "$file")" || status=1
	done < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' internal cmd test | sort)
	return "$status"
}

# fuzz_one fuzzes target NAME of package PKG. Go 1.26's fuzzing coordinator
# can fail a target with a bare "context deadline exceeded" at the end of
# -fuzztime, with no input found (golang/go#75804, fixed in Go 1.27): such a
# run, and only such a run, is tried once more. Any other failure, or the
# same one twice, fails.
fuzz_one() {
	local name="$1" pkg="$2" out rc attempt
	for attempt in 1 2; do
		set +e
		out="$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "${DSO_FUZZTIME:-10s}" "$pkg" 2>&1)"
		rc=$?
		set -e
		echo "$out"
		((rc != 0)) || return 0
		if ((attempt == 1)) && grep -q 'context deadline exceeded' <<<"$out" &&
			! grep -q -e 'Failing input written' -e 'panic:' <<<"$out"; then
			say "fuzz: $name hit Go's fuzztime deadline race (golang/go#75804) and found nothing; once more"
			continue
		fi
		return 1
	done
}

# sweep_strays removes what an earlier run of the tests left on the engine
# when it was killed before its cleanup (go test's -timeout, ^C): the
# containers the test bed labels dso.test (Swarm nodes among them) and the
# compose projects, networks and volumes it names dsotest-*. Run one test
# run per engine at a time: a second one would lose its containers here.
sweep_strays() {
	local containers networks volumes
	containers="$(docker ps -aq --filter label=dso.test 2>/dev/null || true)
$(docker ps -a --format '{{.ID}} {{.Label "com.docker.compose.project"}}' 2>/dev/null | awk '$2 ~ /^dsotest-/ {print $1}' || true)"
	networks="$(docker network ls --format '{{.Name}}' 2>/dev/null | grep '^dsotest-' || true)"
	volumes="$(docker volume ls --format '{{.Name}}' 2>/dev/null | grep '^dsotest-' || true)"
	if [[ -n "${containers//[[:space:]]/}${networks}${volumes}" ]]; then
		say "removing what an earlier, interrupted test run left on the engine"
		# shellcheck disable=SC2086 # one ID or name per word
		{
			[[ -z "${containers//[[:space:]]/}" ]] || docker rm -f -v $containers
			[[ -z "$networks" ]] || docker network rm $networks
			[[ -z "$volumes" ]] || docker volume rm $volumes
		} >/dev/null 2>&1 || true
	fi
}

main() {
	local status=0 args=("$@")
	cd "$DSO_ROOT"
	dso_need_go
	# No test may reach a cloud: the AWS SDK would otherwise try the EC2
	# metadata address when it finds no credentials.
	export AWS_EC2_METADATA_DISABLED=true

	install_tools
	sweep_strays

	say "go mod tidy -diff"
	if ! go mod tidy -diff; then
		say "go.mod or go.sum is not tidy: run go mod tidy and commit the result"
		status=1
	fi

	say "go vet ./..."
	go vet ./... || status=1

	local full=0
	((${#args[@]})) || { full=1; args=(./...); }
	say "go test -count=1 -timeout 60m ${args[*]}"
	go test -count=1 -timeout 60m "${args[@]}" || status=1

	if ((full)); then
		local pkgs
		mapfile -t pkgs < <(unit_packages)
		say "go test -race -count=1 (unit tests: ${#pkgs[@]} packages)"
		go test -race -count=1 -timeout 30m "${pkgs[@]}" || status=1
		fuzz_briefly || status=1
	fi
	# The empty image `docker dso up` makes for rolling services' proxies
	# (the quickstart test of the -race run makes it too): the engine is
	# left as the tests found it.
	docker image rm dso/proxy-base:1 >/dev/null 2>&1 || true

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
