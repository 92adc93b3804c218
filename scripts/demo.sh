#!/usr/bin/env bash
# Runs the DSO quickstart (examples/quickstart) with the installed plugin:
# builds the example app, stores two random demo secrets in a demo vault
# under ~/.dso/demo (your own vault is not touched), runs `docker dso up`,
# and shows what the app reports: that it received both secrets, by length
# and SHA-256 prefix, never by value.
#
#   scripts/demo.sh            bring the quickstart up and leave it running
#   scripts/demo.sh --down     bring it up, check it, then take it down
#   scripts/demo.sh -p NAME    use the project name NAME (default quickstart)
#
# The app is published on 127.0.0.1:$QUICKSTART_PORT (default 18471). Needs
# Go, the docker CLI with the dso and Compose v2 plugins (scripts/install.sh)
# and a running Docker engine. Safe to run again: each run stores new values
# and recreates the container. Exits non-zero, saying why, on any failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

project=quickstart
down=0
while (($#)); do
	case "$1" in
	--down) down=1 ;;
	-p | --project-name)
		(($# >= 2)) || die "$1 needs a project name"
		project="$2"
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage
		die "unknown argument: $1"
		;;
	esac
	shift
done
[[ "$project" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "project name $project: use lowercase letters, digits, - and _"

port="${QUICKSTART_PORT:-18471}"
if [[ ! "$port" =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
	die "QUICKSTART_PORT=$port is not a port number (1-65535)"
fi
url="http://127.0.0.1:$port/"
example="$DSO_ROOT/examples/quickstart"

# Everything the demo needs, checked before anything is changed.
dso_need_go
for tool in docker curl sha256sum od head; do
	command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
docker dso version >/dev/null 2>&1 || die "the docker dso plugin is not installed: run scripts/install.sh"
v="$(docker compose version --short 2>/dev/null)" || die "docker compose is not installed: run scripts/install.sh"
[[ "${v#v}" != 1.* ]] || die "docker compose is $v; DSO needs Compose v2: run scripts/install.sh"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "the Docker engine is not reachable (is it running, may you use it?)"

say "building the quickstart app into examples/quickstart/bin/app"
(cd "$DSO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$example/bin/app" ./examples/quickstart/app) ||
	die "building the quickstart app failed"

# The demo vault, the one examples/quickstart/dso.yaml names.
demo_dir="$HOME/.dso/demo"
export DSO_VAULT_FILE="$demo_dir/vault.enc" DSO_MASTER_KEY_FILE="$demo_dir/master.key"
unset DSO_MASTER_KEY DSO_PASSPHRASE
if [[ ! -e "$DSO_VAULT_FILE" ]]; then
	say "creating the demo vault in $demo_dir"
	docker dso init || die "docker dso init of the demo vault failed"
fi

# random prints 24 random bytes in hex.
random() { head -c 24 /dev/urandom | od -An -vtx1 | tr -d ' \n'; }
# prefix prints the first 8 hex digits of the SHA-256 of $1.
prefix() { printf '%s' "$1" | sha256sum | cut -c1-8; }

db_password="$(random)"
api_key="$(random)"
say "storing new demo values of quickstart/db_password and quickstart/api_key"
# printf is a shell builtin: the values go through a pipe, never argv.
printf '%s' "$db_password" | docker dso secret set quickstart/db_password >/dev/null ||
	die "docker dso secret set quickstart/db_password failed"
printf '%s' "$api_key" | docker dso secret set quickstart/api_key >/dev/null ||
	die "docker dso secret set quickstart/api_key failed"
want_db="$(prefix "$db_password")"
want_key="$(prefix "$api_key")"
unset db_password api_key

cd "$example"
if ((down)); then
	trap 'say "docker dso down -p $project"; docker dso down -p "$project" || say "docker dso down failed"' EXIT
fi

say "docker dso up -d --build --force-recreate -p $project"
docker dso up -d --build --force-recreate -p "$project" ||
	die "docker dso up failed (see above)"

say "waiting for the app at $url"
body="" code=000
for _ in $(seq 120); do
	out="$(curl -sS --max-time 2 -w '\n%{http_code}' "$url" 2>/dev/null)" || out=$'\n000'
	code="${out##*$'\n'}"
	body="${out%$'\n'*}"
	[[ "$code" == 000 ]] || break
	sleep 0.5
done
case "$code" in
200) ;;
000) die "the app did not answer at $url within 60s; see: (cd $example && docker dso logs -p $project), and the agent's log ~/.dso/run/agent.log" ;;
*) die "the app answered $code at $url:"$'\n'"$body" ;;
esac

echo
printf '%s' "$body" | sed 's/^/    /'
echo
[[ "$body" == *"DB_PASSWORD: set ("*"sha256 prefix $want_db)"* ]] ||
	die "the app's DB_PASSWORD is not the value just stored (expected sha256 prefix $want_db)"
[[ "$body" == *"/run/dso/secrets/API_KEY_FILE ("*"sha256 prefix $want_key)"* ]] ||
	die "the app's API key file is not the value just stored (expected sha256 prefix $want_key)"
say "the app received both secrets: their SHA-256 prefixes match the values stored"

cat <<EOF

The quickstart runs as project $project:
  look:  curl $url
         cd $example && docker dso ps -p $project
  stop:  cd $example && docker dso down -p $project
         docker dso agent stop    (the local agent that delivers secrets)
The demo vault is $demo_dir; your own vault was not touched.
EOF
if ((down)); then
	echo "(--down: taking it down now)"
fi
