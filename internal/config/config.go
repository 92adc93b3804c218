// Package config loads dso.yaml: it finds the file, expands ${VAR} and ~,
// checks it against the Go types below (reporting every problem at once, each
// with file:line:column), applies defaults, and describes the same types as a
// JSON Schema for editors.
//
// The types are the schema. Struct tags drive the loader, the validator, the
// redaction of `config show` and the JSON Schema alike:
//
//	yaml:"name"        the key in dso.yaml (json:"name" must agree)
//	desc:"..."         the description shown by editors
//	dso:"required"     the key must be present
//	dso:"path"         a host path: a leading ~ expands to $HOME
//	dso:"secret"       the value is redacted by `config show`
//	dso:"secretkeys"   in a map, values whose key looks secret are redacted
//	keys:"KIND"        map keys must match the pattern of keyKinds[KIND]
//
// A named string type with a Values method is an enumeration.
package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/dso-project/dso/internal/secretref"
)

// Config is the whole of dso.yaml.
type Config struct {
	Version   string              `yaml:"version,omitempty" json:"version,omitempty" desc:"Format version of this file: v1 (v1.0.0 and 1 are accepted)."`
	Mode      Mode                `yaml:"mode,omitempty" json:"mode,omitempty" desc:"local: the CLI works on this host for the current user; agent: a per-host agent (systemd) delivers and rotates secrets."`
	Providers map[string]Provider `yaml:"providers,omitempty" json:"providers,omitempty" keys:"name" desc:"Secret backends by name. Secrets and references (?provider=NAME) refer to these names."`
	Agent     Agent               `yaml:"agent,omitempty" json:"agent,omitzero" desc:"Settings of the per-host agent."`
	Defaults  Defaults            `yaml:"defaults,omitempty" json:"defaults,omitzero" desc:"Values used by every secret that does not set its own."`
	Secrets   []Secret            `yaml:"secrets" json:"secrets" desc:"Secrets to deliver to containers. An empty mapping ({}) counts as an empty list."`

	// File is the path the configuration was read from.
	File string `yaml:"-" json:"-"`

	meta *meta
}

// Provider configures one secret backend.
type Provider struct {
	Type          ProviderType `yaml:"type" json:"type" dso:"required" desc:"Kind of backend: local (encrypted vault file), vault (HashiCorp Vault or OpenBao), aws (AWS Secrets Manager), azure (Azure Key Vault) or plugin (an external provider binary)."`
	Plugin        string       `yaml:"plugin,omitempty" json:"plugin,omitempty" desc:"For type plugin: name of the provider plugin (dso-provider-NAME on PATH) or path to its binary."`
	Address       string       `yaml:"address,omitempty" json:"address,omitempty" desc:"Backend address: the Vault server URL, the Key Vault URL (https://NAME.vault.azure.net), or an endpoint override for AWS. For vault, auth.params.address is used when this is unset."`
	Region        string       `yaml:"region,omitempty" json:"region,omitempty" desc:"For aws: the region (else AWS_REGION or the shared config)."`
	VaultFile     string       `yaml:"vault_file,omitempty" json:"vault_file,omitempty" dso:"path" desc:"For local: path of the encrypted vault file."`
	MasterKeyFile string       `yaml:"master_key_file,omitempty" json:"master_key_file,omitempty" dso:"path" desc:"For local: path of the 0600 file holding the master key."`
	Auth          Auth         `yaml:"auth,omitempty" json:"auth,omitzero" desc:"How to authenticate to the backend."`
	Retry         Retry        `yaml:"retry,omitempty" json:"retry,omitzero" desc:"Retries of failed backend calls."`
	TLS           TLS          `yaml:"tls,omitempty" json:"tls,omitzero" desc:"TLS settings for the connection to the backend."`
	Timeout       Duration     `yaml:"timeout,omitempty" json:"timeout,omitempty" desc:"Time limit of one backend call, such as \"10s\"."`
}

// Auth says how a provider authenticates.
type Auth struct {
	Method string            `yaml:"method,omitempty" json:"method,omitempty" desc:"Authentication method of the backend, such as token or approle (vault), iam_role or access_key (aws), managed_identity or client_secret (azure)."`
	Params map[string]string `yaml:"params,omitempty" json:"params,omitempty" dso:"secretkeys" desc:"Parameters of the method. Use ${VAR} for credentials: values of keys such as token, secret, password or key are never shown."`
}

// Retry bounds the retries of a failed backend call.
type Retry struct {
	Attempts int      `yaml:"attempts,omitempty" json:"attempts,omitempty" desc:"How many times a call is tried in all (default 3)."`
	Backoff  Duration `yaml:"backoff,omitempty" json:"backoff,omitempty" desc:"Wait before the first retry, doubled at each retry (default \"1s\")."`
}

// TLS configures the connection to a backend.
type TLS struct {
	CAFile             string `yaml:"ca_file,omitempty" json:"ca_file,omitempty" dso:"path" desc:"PEM file of the certificate authorities to trust."`
	CertFile           string `yaml:"cert_file,omitempty" json:"cert_file,omitempty" dso:"path" desc:"PEM client certificate."`
	KeyFile            string `yaml:"key_file,omitempty" json:"key_file,omitempty" dso:"path" desc:"PEM private key of the client certificate."`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty" json:"insecure_skip_verify,omitempty" desc:"Do not check the server's certificate (tests only)."`
}

// Agent configures the per-host agent.
type Agent struct {
	Cache    Cache         `yaml:"cache" json:"cache" desc:"Keep the last values fetched in the agent's memory (locked against swap, never on disk), so that a container that starts while its backend is down still gets its secrets: true, false, or a mapping with enabled and max_age (default true)."`
	Watch    Watch         `yaml:"watch,omitempty" json:"watch,omitzero" desc:"How the agent notices changes in the backends."`
	Rotation AgentRotation `yaml:"rotation,omitempty" json:"rotation,omitzero" desc:"Rotation of containers when a secret changes."`
	API      API           `yaml:"api,omitempty" json:"api,omitzero" desc:"The agent's REST API."`
	Socket   string        `yaml:"socket,omitempty" json:"socket,omitempty" dso:"path" desc:"Unix socket of the agent (default /run/dso/dso.sock)."`
	Notify   []Notify      `yaml:"notify,omitempty" json:"notify,omitempty" desc:"Outbound webhooks the agent sends when a rotation succeeds or fails, signed with HMAC-SHA256. They carry names, versions and container ids, never a value."`
	Access   []Access      `yaml:"access,omitempty" json:"access,omitempty" desc:"Which secrets the users of the agent's socket may give the containers they register (agent mode, shared hosts). When set, a caller other than root and the agent's user may register a container only if every secret path it references starts with a prefix granted to the caller's user or one of its groups. When empty, every caller of the socket may use every secret."`
}

// Cache configures the agent's last-known-good values. In dso.yaml it is
// true, false, or a mapping of these fields.
type Cache struct {
	Enabled bool     `yaml:"enabled" json:"enabled" desc:"Keep last-known-good values (default true)."`
	MaxAge  Duration `yaml:"max_age,omitempty" json:"max_age,omitempty" desc:"How long after the backend last confirmed a value the agent still serves it from its memory (default \"24h\")."`
}

// Access grants unix users and groups the secrets under path prefixes.
type Access struct {
	Users   []string `yaml:"users,omitempty" json:"users,omitempty" desc:"Unix user names."`
	Groups  []string `yaml:"groups,omitempty" json:"groups,omitempty" desc:"Unix group names; every member is granted the prefixes."`
	Secrets []string `yaml:"secrets" json:"secrets" dso:"required" desc:"Secret path prefixes, such as \"shop/\": \"shop\" and \"shop/\" grant shop/db but not shopping/db."`
}

// Notify is one endpoint of outbound rotation webhooks.
type Notify struct {
	URL    string        `yaml:"url" json:"url" dso:"required" desc:"http or https URL the agent POSTs a JSON notification to."`
	Secret string        `yaml:"secret" json:"secret" dso:"required,secret" desc:"Key of the signature: X-DSO-Timestamp (Unix seconds) and X-DSO-Signature (sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">); receivers should refuse timestamps more than 5 minutes off. Write ${VAR} to take it from the environment."`
	Events []NotifyEvent `yaml:"events,omitempty" json:"events,omitempty" desc:"Which rotations to report: success, failure (default both)."`
}

// Watch configures change detection.
type Watch struct {
	Mode            WatchMode `yaml:"mode,omitempty" json:"mode,omitempty" desc:"How changes are detected: polling."`
	PollingInterval Duration  `yaml:"polling_interval,omitempty" json:"polling_interval,omitempty" desc:"How often each backend is checked for changes (default \"30s\", at least \"1s\")."`
}

// AgentRotation configures how the agent rotates containers.
type AgentRotation struct {
	Enabled            bool     `yaml:"enabled" json:"enabled" desc:"Rotate containers when their secrets change (default true)."`
	Strategy           Strategy `yaml:"strategy,omitempty" json:"strategy,omitempty" desc:"Strategy for secrets that set none, in defaults or themselves: rolling (default) | restart | signal | none."`
	HealthCheckTimeout Duration `yaml:"health_check_timeout,omitempty" json:"health_check_timeout,omitempty" desc:"How long a rotated container may take to become healthy (default \"30s\")."`
	DrainTimeout       Duration `yaml:"drain_timeout,omitempty" json:"drain_timeout,omitempty" desc:"rolling: how long the replaced container's open connections may take to end before they are closed (default \"30s\")."`
}

// API configures the agent's REST API.
type API struct {
	Address string        `yaml:"address,omitempty" json:"address,omitempty" desc:"host:port to listen on (default 127.0.0.1:8471). A token is required when this is not a loopback address."`
	Token   string        `yaml:"token,omitempty" json:"token,omitempty" dso:"secret" desc:"Bearer token clients must present; write ${VAR} to take it from the environment."`
	Open    []APIEndpoint `yaml:"open,omitempty" json:"open,omitempty" desc:"Endpoints served without the token: health, metrics, events. /health is open anyway while no token is set; /metrics and /events are closed unless listed here (they show which projects and secrets the host runs; the agent's socket serves them to root and the dso group)."`
}

// Defaults are used by every secret that does not set its own.
type Defaults struct {
	Provider string   `yaml:"provider,omitempty" json:"provider,omitempty" desc:"Provider of secrets that name none (default: the only provider, when there is one)."`
	Inject   Inject   `yaml:"inject,omitempty" json:"inject,omitzero" desc:"Default delivery."`
	Rotation Rotation `yaml:"rotation,omitempty" json:"rotation,omitzero" desc:"Default rotation."`
}

// Secret binds values of a provider to containers.
type Secret struct {
	Name     string            `yaml:"name" json:"name" dso:"required" desc:"Name of the secret, unique in this file; containers ask for it with the dso.secrets label."`
	Provider string            `yaml:"provider,omitempty" json:"provider,omitempty" desc:"Name of the provider (a key of providers) holding the values."`
	Inject   Inject            `yaml:"inject,omitempty" json:"inject,omitzero" desc:"How the values reach the containers."`
	Rotation Rotation          `yaml:"rotation,omitempty" json:"rotation,omitzero" desc:"What happens to the containers when a value changes."`
	Targets  Targets           `yaml:"targets,omitempty" json:"targets,omitzero" desc:"Containers that get this secret, besides those labelled dso.secrets."`
	Mappings map[string]string `yaml:"mappings" json:"mappings" dso:"required" keys:"envname" desc:"Environment variable (or file) name -> path of the value in the provider."`
}

// Inject says how values are delivered into a container.
type Inject struct {
	Type InjectType `yaml:"type,omitempty" json:"type,omitempty" desc:"env: environment variables of the application process; file: one file per mapping at /run/dso/secrets/NAME on a tmpfs inside the container, owned by the container's user, mode 0400 (unless uid, gid or mode say otherwise), with the variable NAME holding its path (default env)."`
	UID  *int       `yaml:"uid,omitempty" json:"uid,omitempty" desc:"For file: numeric owner of the files (default: the container's user). Another owner than the container's user needs a service running as root, such as an entrypoint that reads its secrets as root and then drops privileges."`
	GID  *int       `yaml:"gid,omitempty" json:"gid,omitempty" desc:"For file: numeric group of the files (default: the container's group). Another group than the container's needs a service running as root."`
	Mode *FileMode  `yaml:"mode,omitempty" json:"mode,omitempty" desc:"For file: permission bits of the files in octal, from \"0000\" to \"0777\", such as \"0440\" (default \"0400\")."`
}

// Perm returns the owner and mode that i sets, for a file reference.
func (i Inject) Perm() secretref.Perm {
	var p secretref.Perm
	if i.UID != nil {
		p.UID, p.HasUID = uint32(*i.UID), true
	}
	if i.GID != nil {
		p.GID, p.HasGID = uint32(*i.GID), true
	}
	if i.Mode != nil {
		p.Mode, p.HasMode = uint32(*i.Mode), true
	}
	return p
}

// FileMode is permission bits written in octal, such as "0440".
type FileMode uint32

// MarshalText writes m as "0440".
func (m FileMode) MarshalText() ([]byte, error) { return []byte(fmt.Sprintf("%04o", uint32(m))), nil }

// Rotation says what happens to containers when a value changes.
type Rotation struct {
	Enabled  bool     `yaml:"enabled" json:"enabled" desc:"Act on the containers when a value changes (default true)."`
	Strategy Strategy `yaml:"strategy,omitempty" json:"strategy,omitempty" desc:"rolling (default): a new container beside the old one, swapped behind the proxy that owns the host ports | restart | signal | none."`
	Signal   string   `yaml:"signal,omitempty" json:"signal,omitempty" desc:"For strategy signal: the signal sent to the application (default SIGHUP)."`
}

// Targets names containers explicitly.
type Targets struct {
	Containers []string `yaml:"containers,omitempty" json:"containers,omitempty" desc:"Container or compose service names."`
}

// Mode is how DSO runs on the host.
type Mode string

// Modes.
const (
	ModeLocal Mode = "local"
	ModeAgent Mode = "agent"
)

// Values lists the accepted modes.
func (Mode) Values() []string { return []string{string(ModeLocal), string(ModeAgent)} }

// ProviderType is the kind of a backend.
type ProviderType string

// Provider types.
const (
	ProviderLocal  ProviderType = "local"
	ProviderVault  ProviderType = "vault"
	ProviderAWS    ProviderType = "aws"
	ProviderAzure  ProviderType = "azure"
	ProviderPlugin ProviderType = "plugin"
)

// Values lists the accepted provider types.
func (ProviderType) Values() []string {
	return []string{string(ProviderLocal), string(ProviderVault), string(ProviderAWS), string(ProviderAzure), string(ProviderPlugin)}
}

// WatchMode is how changes are detected.
type WatchMode string

// WatchPolling checks each backend at an interval.
const WatchPolling WatchMode = "polling"

// Values lists the accepted watch modes.
func (WatchMode) Values() []string { return []string{string(WatchPolling)} }

// NotifyEvent is a kind of rotation outcome a webhook reports.
type NotifyEvent string

// Notification events.
const (
	NotifySuccess NotifyEvent = "success"
	NotifyFailure NotifyEvent = "failure"
)

// Values lists the accepted notification events.
func (NotifyEvent) Values() []string { return []string{string(NotifySuccess), string(NotifyFailure)} }

// APIEndpoint is an endpoint of the REST API that can be opened.
type APIEndpoint string

// Endpoints that can be opened.
const (
	APIHealth  APIEndpoint = "health"
	APIMetrics APIEndpoint = "metrics"
	APIEvents  APIEndpoint = "events"
)

// Values lists the endpoints that can be opened.
func (APIEndpoint) Values() []string {
	return []string{string(APIHealth), string(APIMetrics), string(APIEvents)}
}

// InjectType is how values reach a container.
type InjectType string

// Inject types.
const (
	InjectEnv  InjectType = "env"
	InjectFile InjectType = "file"
)

// Values lists the accepted inject types.
func (InjectType) Values() []string { return []string{string(InjectEnv), string(InjectFile)} }

// Strategy is what happens to containers when a secret changes.
type Strategy string

// Strategies (internal/rotate applies them).
const (
	StrategyNone    Strategy = "none"
	StrategySignal  Strategy = "signal"
	StrategyRestart Strategy = "restart"
	StrategyRolling Strategy = "rolling"
)

// Values lists the strategies the file may name.
func (Strategy) Values() []string {
	return []string{string(StrategyNone), string(StrategySignal), string(StrategyRestart), string(StrategyRolling)}
}

// Duration is a time.Duration written as a string such as "30s" or "5m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as "30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads "30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("expected a duration such as \"30s\", \"5m\" or \"1h30m\"")
	}
	if v < 0 {
		return 0, fmt.Errorf("expected a duration that is not negative")
	}
	return Duration(v), nil
}
