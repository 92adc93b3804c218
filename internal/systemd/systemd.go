// Package systemd installs the agent as a system service: the dso group,
// /etc/dso with a starter dso.yaml, /run/dso, /var/lib/dso and a hardened
// dso-agent.service, enabled through systemctl. It also wraps systemctl
// and journalctl for `docker dso system`. Every path is taken under a
// root prefix, so that tests (and packagers) can work in a directory
// instead of on the host.
package systemd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// UnitName is the agent's systemd unit.
const UnitName = "dso-agent.service"

// GroupName is the group whose members may use the agent without sudo.
const GroupName = "dso"

// The paths of an agent install, relative to the root prefix.
const (
	ConfigDir  = "/etc/dso"
	ConfigFile = "/etc/dso/dso.yaml"
	RunDir     = "/run/dso"
	StateDir   = "/var/lib/dso"
	UnitFile   = "/etc/systemd/system/" + UnitName
)

// ErrNoSystemd means systemctl or journalctl cannot be used on this host.
var ErrNoSystemd = errors.New("systemd is not available")

// Providers bootstrap can write a starter configuration for.
var Providers = []string{"aws", "azure", "vault"}

// Runner runs a program with explicit arguments and returns its combined
// output. Exec is the real one.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// Exec runs name with args (no shell).
func Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not installed", ErrNoSystemd, name)
	}
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Running tells whether systemd is the init system under root.
func Running(root string) bool {
	fi, err := os.Stat(filepath.Join(root, "/run/systemd/system"))
	return err == nil && fi.IsDir()
}

// Executable returns the real path of the running binary (symlinks
// resolved), the one a unit's ExecStart should run.
func Executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding this binary for the unit's ExecStart: %w", err)
	}
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return "", fmt.Errorf("finding this binary for the unit's ExecStart: %w", err)
	}
	return real, nil
}

// Unit returns the text of dso-agent.service running binary.
func Unit(binary string) string {
	return `[Unit]
Description=DSO secret agent for Docker Compose
Documentation=https://github.com/dso-project/dso
After=docker.service network-online.target
Wants=docker.service network-online.target

[Service]
Type=simple
ExecStart=` + binary + ` agent --config ` + ConfigFile + `
Restart=on-failure
RestartSec=2s
# Runs as root to reach the Docker socket; group dso owns the socket dir.
Group=` + GroupName + `
UMask=0077
RuntimeDirectory=dso
RuntimeDirectoryMode=0750
RuntimeDirectoryPreserve=restart
StateDirectory=dso
StateDirectoryMode=0700
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=` + RunDir + ` ` + StateDir + `
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
ProtectProc=invisible
ProcSubset=pid
SystemCallFilter=@system-service
SystemCallFilter=~@resources
SystemCallErrorNumber=EPERM
# CAP_CHOWN gives the socket to group dso; CAP_DAC_OVERRIDE reads a
# project's dso.yaml and files that only their owner may read;
# CAP_SYS_PTRACE opens the control socket of a proxy (which runs as nobody)
# and a container's init through /proc/PID, and CAP_NET_BIND_SERVICE binds
# host ports under 1024, so that the agent binds the proxies' host ports
# and hands them over (without them, Docker publishes the ports).
CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_SYS_PTRACE CAP_NET_BIND_SERVICE

[Install]
WantedBy=multi-user.target
`
}

// StarterConfig returns a dso.yaml for an agent using provider.
func StarterConfig(provider string) ([]byte, error) {
	var p string
	switch provider {
	case "aws":
		p = `  aws:
    type: aws
    region: us-east-1         # your region
    auth:
      method: iam_role        # the instance role: no credentials in this file
`
	case "azure":
		p = `  azure:
    type: azure
    address: https://YOUR-VAULT.vault.azure.net
    auth:
      method: managed_identity
`
	case "vault":
		p = `  vault:
    type: vault
    address: https://vault.example.com:8200
    auth:
      method: token
      params:
        token: ${VAULT_TOKEN}  # from the agent's environment, never written here
`
	default:
		return nil, fmt.Errorf("provider %q: want one of %s", provider, strings.Join(Providers, ", "))
	}
	return []byte(`# dso.yaml for the DSO agent (created by docker dso bootstrap agent).
# Members of the dso group may edit this file. Check it with:
#   docker dso config validate
version: v1
mode: agent

providers:
` + p + `
agent:
  watch:
    mode: polling
    polling_interval: 30s
  rotation:
    enabled: true
    strategy: restart
    health_check_timeout: 30s

# Add the secrets to deliver, for example:
# secrets:
#   - name: database
#     provider: ` + provider + `
#     rotation:
#       strategy: restart     # none | signal | restart
#     mappings:
#       DB_PASSWORD: prod/db/password
secrets: []
`), nil
}

// lookupGroup finds name's gid in root's group database.
func lookupGroup(root, name string) (int, bool, error) {
	if root == "/" {
		g, err := user.LookupGroup(name)
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		gid, err := strconv.Atoi(g.Gid)
		return gid, err == nil, err
	}
	f, err := os.Open(filepath.Join(root, "/etc/group"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) >= 3 && parts[0] == name {
			gid, err := strconv.Atoi(parts[2])
			if err != nil {
				return 0, false, fmt.Errorf("%s: group %s has gid %q", f.Name(), name, parts[2])
			}
			return gid, true, nil
		}
	}
	return 0, false, sc.Err()
}
