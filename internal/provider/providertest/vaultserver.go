package providertest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// VaultVersion is the Vault server that scripts/tools/vault.sh builds.
const VaultVersion = "1.21.0"

// VaultBinary returns the path of the Vault server binary: $DSO_VAULT_BIN,
// else vault-VERSION in ${DSO_TOOLS_DIR:-~/.cache/dso-tools}, where
// scripts/tools/vault.sh puts it. The error says how to build it.
func VaultBinary() (string, error) {
	path := os.Getenv("DSO_VAULT_BIN")
	if path == "" {
		dir := os.Getenv("DSO_TOOLS_DIR")
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			dir = filepath.Join(home, ".cache", "dso-tools")
		}
		path = filepath.Join(dir, "vault-"+VaultVersion)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no vault server binary at %s: build it with scripts/tools/vault.sh (about 8 minutes once per machine)", path)
	}
	return path, nil
}

// VaultServer is a `vault server -dev` on 127.0.0.1, root token "root".
type VaultServer struct {
	Addr  string // http://127.0.0.1:PORT
	Token string
	cmd   *exec.Cmd
	done  chan struct{}
}

// StartVault starts a Vault dev server from bin on a free loopback port
// and waits until it answers.
func StartVault(bin string) (*VaultServer, error) {
	addr := "127.0.0.1:" + portOf(freeAddr())
	cmd := exec.Command(bin, "server", "-dev", "-dev-root-token-id=root",
		"-dev-listen-address="+addr, "-dev-no-store-token")
	cmd.Env = []string{"HOME=" + os.TempDir(), "PATH=/usr/bin:/bin", "VAULT_LOG_LEVEL=warn"}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s := &VaultServer{Addr: "http://" + addr, Token: "root", cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, errors.New("vault dev server exited before it was ready")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("vault dev server not ready after 30s")
		}
	}
}

// Stop kills the server and waits for it to exit.
func (s *VaultServer) Stop() {
	_ = s.cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
	}
}
