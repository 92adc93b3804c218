package config

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/dso-project/dso/internal/secretref"
)

var (
	versionRe    = regexp.MustCompile(`^v?1(\.[0-9]+){0,2}$`)
	secretNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// signals a signal rotation may send.
var signals = []string{"SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH"}

// validate checks what the types alone cannot: references between
// sections, uniqueness, and settings that make sense only together. It skips
// values the decoder already refused (left empty).
func validate(c *Config, ps *problems) {
	m := c.meta
	if c.Version != "" && !versionRe.MatchString(c.Version) {
		ps.addAt(m.at("version"), "version", "unsupported version %q; this DSO reads version v1 files (v1, v1.0.0)", c.Version)
	}

	names := providerNames(c)
	for _, name := range names {
		validateProvider(c.Providers[name], join("providers", name), m, ps)
	}

	if m.set("agent.cache.max_age") && c.Agent.Cache.MaxAge.D().Seconds() < 1 {
		ps.addAt(m.at("agent.cache.max_age"), "agent.cache.max_age", "must be at least 1s, got %s", c.Agent.Cache.MaxAge)
	}
	if m.set("agent.watch.polling_interval") && c.Agent.Watch.PollingInterval.D().Seconds() < 1 {
		ps.addAt(m.at("agent.watch.polling_interval"), "agent.watch.polling_interval", "must be at least 1s, got %s", c.Agent.Watch.PollingInterval)
	}
	for i, n := range c.Agent.Notify {
		validateNotify(n, fmt.Sprintf("agent.notify[%d]", i), m, ps)
	}
	validateInject(c.Defaults.Inject, c.Defaults.Inject.Type, "defaults.inject", m, ps)
	validateRotation(c.Defaults.Rotation, c.defaultStrategy(), "defaults.rotation", m, ps)
	if p := c.Defaults.Provider; p != "" {
		if _, ok := c.Providers[p]; !ok {
			ps.addAt(m.at("defaults.provider"), "defaults.provider", "unknown provider %q%s; %s", p, suggest(p, names), defined(names))
		}
	}

	firstSecret := map[string]int{}
	for i, s := range c.Secrets {
		sp := fmt.Sprintf("secrets[%d]", i)
		if s.Name != "" {
			np := sp + ".name"
			if !secretNameRe.MatchString(s.Name) {
				ps.addAt(m.at(np), np, "%q is not a valid secret name; expected letters, digits, _, . and - (starting with a letter or digit)", s.Name)
			}
			if j, dup := firstSecret[s.Name]; dup {
				ps.addAt(m.at(np), np, "duplicate secret name %q (first at line %d)", s.Name, m.at(fmt.Sprintf("secrets[%d].name", j)).line)
			} else {
				firstSecret[s.Name] = i
			}
		}
		validateSecretProvider(c, s, sp, names, ps)
		validateInject(s.Inject, first(s.Inject.Type, c.Defaults.Inject.Type, InjectEnv), sp+".inject", m, ps)
		validateRotation(s.Rotation, first(s.Rotation.Strategy, c.defaultStrategy()), sp+".rotation", m, ps)
		for j, ct := range s.Targets.Containers {
			cp := fmt.Sprintf("%s.targets.containers[%d]", sp, j)
			if strings.TrimSpace(ct) == "" && m.set(cp) {
				ps.addAt(m.at(cp), cp, "container name is empty")
			}
		}
		if m.set(sp+".mappings") && len(s.Mappings) == 0 {
			ps.addAt(m.at(sp+".mappings"), sp+".mappings", "expected at least one entry ENV_NAME: path/in/provider")
		}
		for _, k := range sortedKeys(s.Mappings) {
			kp := join(sp+".mappings", k)
			if strings.TrimSpace(s.Mappings[k]) == "" && m.set(kp) {
				ps.addAt(m.at(kp), kp, "expected the path of the value in the provider, got an empty string")
			}
		}
	}
}

func providerNames(c *Config) []string { return sortedKeys(c.Providers) }

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func defined(names []string) string {
	if len(names) == 0 {
		return "dso.yaml defines no providers"
	}
	return "defined: " + strings.Join(names, ", ")
}

// onlyFor lists the provider fields that make sense for some types only.
var onlyFor = []struct {
	key   string
	types []ProviderType
	set   func(Provider) bool
}{
	{"plugin", []ProviderType{ProviderPlugin}, func(p Provider) bool { return p.Plugin != "" }},
	{"region", []ProviderType{ProviderAWS}, func(p Provider) bool { return p.Region != "" }},
	{"vault_file", []ProviderType{ProviderLocal}, func(p Provider) bool { return p.VaultFile != "" }},
	{"master_key_file", []ProviderType{ProviderLocal}, func(p Provider) bool { return p.MasterKeyFile != "" }},
	{"address", []ProviderType{ProviderVault, ProviderAzure, ProviderAWS, ProviderPlugin}, func(p Provider) bool { return p.Address != "" }},
}

func validateProvider(p Provider, pp string, m *meta, ps *problems) {
	if p.Type == "" {
		return
	}
	for _, o := range onlyFor {
		if !o.set(p) || containsType(o.types, p.Type) {
			continue
		}
		kp := join(pp, o.key)
		ps.addAt(m.keyAt(kp), kp, "applies only to providers of type %s, not %s", joinTypes(o.types), p.Type)
	}
	if p.Type == ProviderPlugin && p.Plugin == "" {
		ps.addAt(m.keyAt(join(pp, "type")), pp, "type plugin needs plugin: the name of the provider plugin or the path of its binary")
	}
	if m.set(join(pp, "retry.attempts")) && p.Retry.Attempts < 1 {
		ps.addAt(m.at(join(pp, "retry.attempts")), join(pp, "retry.attempts"), "must be at least 1, got %d", p.Retry.Attempts)
	}
}

func containsType(types []ProviderType, t ProviderType) bool {
	for _, x := range types {
		if x == t {
			return true
		}
	}
	return false
}

func joinTypes(types []ProviderType) string {
	s := make([]string, len(types))
	for i, t := range types {
		s[i] = string(t)
	}
	return oneOf(s)
}

// validateNotify checks one webhook endpoint. The URL is not echoed: it
// may carry a token.
func validateNotify(n Notify, np string, m *meta, ps *problems) {
	up := np + ".url"
	if m.set(up) {
		u, err := url.Parse(n.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.addAt(m.at(up), up, "expected an http or https URL with a host, such as https://hooks.example.com/dso")
		}
	}
	sp := np + ".secret"
	if m.set(sp) && n.Secret == "" {
		ps.addAt(m.at(sp), sp, "the signing secret is empty; set a key (write ${VAR} to take it from the environment)")
	}
}

// validateInject checks the owner and mode of i, whose type in effect is
// typ ("" when it is not known yet: defaults.inject without a type).
func validateInject(i Inject, typ InjectType, ip string, m *meta, ps *problems) {
	for _, id := range []struct {
		key string
		v   *int
	}{{"uid", i.UID}, {"gid", i.GID}} {
		if id.v != nil && (*id.v < 0 || *id.v > secretref.MaxID) {
			kp := join(ip, id.key)
			ps.addAt(m.at(kp), kp, "expected a numeric id from 0 to %d, got %d", secretref.MaxID, *id.v)
		}
	}
	if typ != InjectEnv {
		return
	}
	for _, k := range []struct {
		key string
		set bool
	}{{"uid", i.UID != nil}, {"gid", i.GID != nil}, {"mode", i.Mode != nil}} {
		if k.set {
			kp := join(ip, k.key)
			ps.addAt(m.keyAt(kp), kp, "applies only to inject type file (the owner and mode of the files), not env")
		}
	}
}

// validateRotation checks r, whose strategy in effect is strategy.
func validateRotation(r Rotation, strategy Strategy, rp string, m *meta, ps *problems) {
	if r.Signal == "" {
		return
	}
	sp := rp + ".signal"
	if strategy != StrategySignal {
		ps.addAt(m.keyAt(sp), sp, "applies only to strategy signal, not %s", strategy)
		return
	}
	name := strings.ToUpper(r.Signal)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if !contains(signals, name) {
		ps.addAt(m.at(sp), sp, "unknown signal %q%s; expected %s", r.Signal, suggest(name, signals), oneOf(signals))
	}
}

func validateSecretProvider(c *Config, s Secret, sp string, names []string, ps *problems) {
	m := c.meta
	pp := sp + ".provider"
	switch {
	case s.Provider != "":
		if _, ok := c.Providers[s.Provider]; !ok {
			ps.addAt(m.at(pp), pp, "unknown provider %q%s; %s", s.Provider, suggest(s.Provider, names), defined(names))
		}
	case c.DefaultProvider() != "":
	case len(names) == 0:
		ps.addAt(m.at(sp), sp, "no provider to take it from: add one under providers")
	default:
		ps.addAt(m.at(sp), sp, "which provider? set provider (one of %s) or defaults.provider", oneOf(names))
	}
}
