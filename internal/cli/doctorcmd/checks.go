package doctorcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/cli/composecmd"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/secretref"
)

// Time limits of the checks that talk to something.
const (
	engineTimeout   = 10 * time.Second
	commandTimeout  = 15 * time.Second
	providerTimeout = 20 * time.Second
)

// doctor runs the checks and gathers their findings in order.
type doctor struct {
	f    *cmdutil.Factory
	full bool

	findings []Finding
	cfg      *config.Config // nil when there is no usable dso.yaml
	cfgOK    bool           // dso.yaml is absent or valid
	// providers that could be built, by name, and the sets holding them.
	providers map[string]provider.Provider
	sets      []*resolve.Set
}

func (d *doctor) add(fd Finding) { d.findings = append(d.findings, fd) }

func (d *doctor) checkAll(ctx context.Context) {
	d.checkEngine(ctx)
	d.checkCompose(ctx)
	d.checkPlugin(ctx)
	d.checkInit()
	d.checkConfig()
	if d.cfgOK {
		d.checkProviders(ctx)
	}
	if d.full {
		d.checkSecrets(ctx)
		d.checkAgent(ctx)
	}
	for _, s := range d.sets {
		s.Close()
	}
}

func (d *doctor) checkEngine(ctx context.Context) {
	const what = "Docker engine reachable"
	fix := "start the engine (sudo systemctl start docker), or point DOCKER_HOST or `docker context use` at it; your user needs access to its socket (the docker group)"
	cli, err := d.f.Docker()
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: fix})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: fmt.Sprintf("%s: %v", cli.DaemonHost(), err), Fix: fix})
		return
	}
	v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: fmt.Sprintf("%s answers a ping but not /version: %v", cli.DaemonHost(), err), Fix: fix})
		return
	}
	d.add(Finding{Check: what, Status: StatusOK,
		Detail: fmt.Sprintf("engine %s at %s, API %s (minimum %s), used at API %s", v.Version, cli.DaemonHost(), v.APIVersion, v.MinAPIVersion, cli.ClientVersion())})
}

// docker runs `docker ARGS...` as the user would, without what would make
// the docker CLI take it for a plugin call, and returns its standard output.
func docker(ctx context.Context, args ...string) (string, error) {
	bin, err := exec.LookPath("docker")
	if err != nil {
		return "", errors.New("the docker CLI is not on PATH")
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_CLI_PLUGIN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("docker %s: %s", strings.Join(args, " "), firstLine(msg))
	}
	return strings.TrimSpace(out.String()), nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (d *doctor) checkCompose(ctx context.Context) {
	const what = "Docker Compose v2 present"
	fix := "install the Compose v2 plugin as ~/.docker/cli-plugins/docker-compose or /usr/local/lib/docker/cli-plugins/docker-compose (scripts/install.sh does); the Python docker-compose 1.x is not enough"
	out, err := docker(ctx, "compose", "version")
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: fix})
		return
	}
	// "Docker Compose version v2.29.1"
	fields := strings.Fields(firstLine(out))
	if len(fields) == 0 {
		d.add(Finding{Check: what, Status: StatusFail, Detail: "docker compose version printed nothing", Fix: fix})
		return
	}
	v := fields[len(fields)-1]
	if major := strings.TrimPrefix(v, "v"); strings.HasPrefix(major, "1.") || strings.HasPrefix(major, "0.") {
		d.add(Finding{Check: what, Status: StatusFail, Detail: "docker compose is version " + v, Fix: fix})
		return
	}
	d.add(Finding{Check: what, Status: StatusOK, Detail: "docker compose " + v})
}

func (d *doctor) checkPlugin(ctx context.Context) {
	const what = "docker dso plugin installed"
	fix := "install this binary as ~/.docker/cli-plugins/docker-dso or /usr/local/lib/docker/cli-plugins/docker-dso (scripts/install.sh does), executable"
	out, err := docker(ctx, "dso", "version")
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: fix})
		return
	}
	d.add(Finding{Check: what, Status: StatusOK, Detail: "`docker dso` answers: " + strings.ReplaceAll(out, "\n", ", ")})
}

func (d *doctor) checkInit() {
	const what = "dso-init installed"
	p, err := composecmd.InitBinary()
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: "install dso-init beside docker-dso (scripts/install.sh does), or set DSO_INIT to its path"})
		return
	}
	st, _ := os.Stat(p)
	d.add(Finding{Check: what, Status: StatusOK, Detail: fmt.Sprintf("%s (%d bytes); `docker dso up` bind-mounts it into each service that takes secrets", p, st.Size())})
}

func (d *doctor) checkConfig() {
	const what = "dso.yaml found and valid"
	loader := config.System()
	path, err := loader.Locate(d.f.ConfigPath)
	if err != nil {
		if d.f.ConfigPath == "" && errors.Is(err, config.ErrNoFile) {
			d.cfgOK = true
			d.add(Finding{Check: what, Status: StatusWarn, config: true,
				Detail: "no dso.yaml in this directory nor /etc/dso: references use the local vault (~/.dso) alone",
				Fix:    "to use Vault, AWS, Azure or a plugin, create dso.yaml (docker dso setup) or pass -c FILE"})
			return
		}
		d.add(Finding{Check: what, Status: StatusFail, config: true, Detail: err.Error(), Fix: "pass -c with the path of an existing dso.yaml, or create one with docker dso setup"})
		return
	}
	cfg, err := loader.Load(path)
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, config: true, Detail: err.Error(), Fix: "correct the lines named above; docker dso config validate checks the file again"})
		return
	}
	d.cfg, d.cfgOK = cfg, true
	d.add(Finding{Check: what, Status: StatusOK, config: true,
		Detail: fmt.Sprintf("%s: mode %s, %d provider(s), %d secret(s)", cfg.File, cfg.Mode, len(cfg.Providers), len(cfg.Secrets))})
}

// checkProviders builds each provider on its own, so that one that cannot
// be built hides none of the others, and asks each for one version.
func (d *doctor) checkProviders(ctx context.Context) {
	entries := map[string]config.Provider{resolve.DefaultLocal: {Type: config.ProviderLocal}}
	if d.cfg != nil && len(d.cfg.Providers) > 0 {
		entries = d.cfg.Providers
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	d.providers = map[string]provider.Provider{}
	found := make([]Finding, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		pc := entries[name]
		set, err := resolve.Default().Build(&config.Config{Providers: map[string]config.Provider{name: pc}})
		if err != nil {
			found[i] = Finding{Check: providerCheck(name, pc), Status: StatusFail, Detail: err.Error(), Fix: buildFix(name, pc)}
			continue
		}
		d.sets = append(d.sets, set)
		p, _ := set.Named(name)
		d.providers[name] = p
		wg.Go(func() { found[i] = d.checkProvider(ctx, name, pc, p) })
	}
	wg.Wait()
	for _, fd := range found {
		d.add(fd)
	}
}

func providerCheck(name string, pc config.Provider) string {
	return fmt.Sprintf("provider %q (%s) reachable and authenticated", name, pc.Type)
}

func buildFix(name string, pc config.Provider) string {
	switch pc.Type {
	case config.ProviderLocal:
		return "create the vault with docker dso init, or correct vault_file and master_key_file of providers." + name
	case config.ProviderPlugin:
		return fmt.Sprintf("install the plugin binary (dso-provider-%s in ~/.dso/plugins or /usr/local/lib/dso/plugins) and pin its checksum (auth.params.sha256 or SHA256SUMS beside it)", pc.Plugin)
	}
	return fmt.Sprintf("correct providers.%s in dso.yaml (docker dso config show prints what was read)", name)
}

// providerOf returns the name of the provider a dso.yaml secret uses: its
// own, else defaults.provider, else the only one.
func (d *doctor) providerOf(s config.Secret) string {
	if s.Provider != "" {
		return s.Provider
	}
	return d.cfg.DefaultProvider()
}

// probePath is the secret whose version tells whether a provider is
// reachable and takes the credentials: one that dso.yaml maps to it, else a
// name that most likely does not exist (not found means reachable too).
func (d *doctor) probePath(name string, t config.ProviderType) string {
	if d.cfg != nil {
		for _, s := range d.cfg.Secrets {
			if d.providerOf(s) != name {
				continue
			}
			paths := make([]string, 0, len(s.Mappings))
			for _, path := range s.Mappings {
				paths = append(paths, path)
			}
			if len(paths) > 0 {
				sort.Strings(paths)
				return paths[0]
			}
		}
	}
	if t == config.ProviderVault {
		return "secret/data/dso-doctor-probe"
	}
	return "dso-doctor/probe"
}

func (d *doctor) checkProvider(ctx context.Context, name string, pc config.Provider, p provider.Provider) Finding {
	what := providerCheck(name, pc)
	path := d.probePath(name, pc.Type)
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	start := time.Now()
	_, err := p.Version(ctx, path)
	took := time.Since(start).Round(time.Millisecond)
	where := describe(pc)
	switch {
	case err == nil:
		return Finding{Check: what, Status: StatusOK, Detail: fmt.Sprintf("%s answered the version of %q in %s", where, path, took)}
	case errors.Is(err, provider.ErrNotFound):
		return Finding{Check: what, Status: StatusOK, Detail: fmt.Sprintf("%s answered in %s (%q does not exist there, which is fine for this check)", where, took, path)}
	case errors.Is(err, provider.ErrThrottled):
		return Finding{Check: what, Status: StatusWarn, Detail: err.Error(), Fix: "the backend is throttling this client: lower agent.watch.polling_interval's load or raise the backend's limits"}
	case errors.Is(err, provider.ErrUnreachable):
		return Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: unreachableFix(name, pc)}
	case errors.Is(err, provider.ErrDenied):
		return Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: deniedFix(name, pc, path)}
	default:
		return Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: unreachableFix(name, pc)}
	}
}

// describe names the backend of a provider entry for messages.
func describe(pc config.Provider) string {
	switch pc.Type {
	case config.ProviderLocal:
		if pc.VaultFile != "" {
			return "the local vault " + pc.VaultFile
		}
		return "the local vault"
	case config.ProviderVault:
		return "Vault at " + vaultAddr(pc)
	case config.ProviderAzure:
		return "Key Vault at " + pc.Address
	case config.ProviderAWS:
		if pc.Address != "" {
			return "AWS Secrets Manager at " + pc.Address
		}
		return "AWS Secrets Manager"
	case config.ProviderPlugin:
		return "plugin " + pc.Plugin
	}
	return string(pc.Type)
}

// vaultAddr is the address the vault provider uses: address, else
// auth.params.address, else VAULT_ADDR.
func vaultAddr(pc config.Provider) string {
	for _, a := range []string{pc.Address, pc.Auth.Params["address"], os.Getenv("VAULT_ADDR")} {
		if a != "" {
			return a
		}
	}
	return "(no address)"
}

func unreachableFix(name string, pc config.Provider) string {
	switch pc.Type {
	case config.ProviderLocal:
		return "create the vault with docker dso init, and give its key (~/.dso/master.key, DSO_MASTER_KEY or DSO_PASSPHRASE)"
	case config.ProviderVault:
		return fmt.Sprintf("check providers.%s.address in dso.yaml (or VAULT_ADDR) and that the Vault server runs and is unsealed; from this host try: curl %s/v1/sys/health", name, strings.TrimSuffix(vaultAddr(pc), "/"))
	case config.ProviderAWS:
		return fmt.Sprintf("check the region (providers.%s.region or AWS_REGION), providers.%s.address if you override the endpoint, network access to Secrets Manager, and that credentials are available (AWS_ACCESS_KEY_ID, a profile, or an instance role)", name, name)
	case config.ProviderAzure:
		return fmt.Sprintf("check providers.%s.address (https://NAME.vault.azure.net) and network access to it, and that a credential is available (AZURE_CLIENT_ID and AZURE_TENANT_ID, managed identity, or az login)", name)
	case config.ProviderPlugin:
		return fmt.Sprintf("check the plugin %s runs and reaches its backend, and its options under providers.%s.auth.params", pc.Plugin, name)
	}
	return fmt.Sprintf("check providers.%s in dso.yaml", name)
}

func deniedFix(name string, pc config.Provider, path string) string {
	switch pc.Type {
	case config.ProviderVault:
		return fmt.Sprintf("check the token (providers.%s.auth.params.token or VAULT_TOKEN) or the AppRole credentials, and that its policy allows read on %q and its metadata", name, path)
	case config.ProviderAWS:
		return fmt.Sprintf("check the AWS credentials (keys, profile or role) and that their policy allows secretsmanager:DescribeSecret and GetSecretValue on %q", path)
	case config.ProviderAzure:
		return fmt.Sprintf("check the Azure identity and that its access policy or RBAC role allows Get on secret %q", path)
	case config.ProviderLocal:
		return "check the master key: ~/.dso/master.key, DSO_MASTER_KEY or DSO_PASSPHRASE"
	}
	return fmt.Sprintf("check the credentials of providers.%s in dso.yaml", name)
}

// checkSecrets reads the version of every value dso.yaml maps.
func (d *doctor) checkSecrets(ctx context.Context) {
	if d.cfg == nil || len(d.cfg.Secrets) == 0 {
		return
	}
	for _, s := range d.cfg.Secrets {
		what := fmt.Sprintf("secret %q readable", s.Name)
		vars := make([]string, 0, len(s.Mappings))
		for v := range s.Mappings {
			vars = append(vars, v)
		}
		sort.Strings(vars)
		var bad []string
		var fixes []string
		name := d.providerOf(s)
		p, built := d.providers[name]
		pc := d.cfg.Providers[name]
		switch {
		case name == "":
			d.add(Finding{Check: what, Status: StatusFail, config: true, Detail: "the secret names no provider and dso.yaml has several with no defaults.provider",
				Fix: "set provider: on the secret, or defaults.provider in dso.yaml"})
			continue
		case !built:
			d.add(Finding{Check: what, Status: StatusFail, Detail: fmt.Sprintf("provider %q could not be set up (see above)", name), Fix: buildFix(name, pc)})
			continue
		}
		for _, v := range vars {
			path := s.Mappings[v]
			cctx, cancel := context.WithTimeout(ctx, providerTimeout)
			_, err := p.Version(cctx, path)
			cancel()
			if err == nil {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s: %v", v, err))
			ref := secretref.Ref{Provider: name, Path: path}
			switch {
			case errors.Is(err, provider.ErrNotFound) && pc.Type == config.ProviderLocal:
				fixes = append(fixes, "docker dso secret set "+ref.Path)
			case errors.Is(err, provider.ErrNotFound):
				fixes = append(fixes, fmt.Sprintf("create %q in provider %q, or correct the mapping of %s", ref.Path, name, v))
			case errors.Is(err, provider.ErrDenied):
				fixes = append(fixes, deniedFix(name, pc, ref.Path))
			default:
				fixes = append(fixes, unreachableFix(name, pc))
			}
		}
		if len(bad) > 0 {
			d.add(Finding{Check: what, Status: StatusFail, Detail: strings.Join(bad, "\n"), Fix: strings.Join(dedupe(fixes), "\n")})
			continue
		}
		d.add(Finding{Check: what, Status: StatusOK, Detail: fmt.Sprintf("the version of each of %s was read (no value)", strings.Join(vars, ", "))})
	}
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	out := s[:0]
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
