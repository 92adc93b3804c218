package config

import (
	"strconv"
	"time"
)

// Defaults of values left unset.
const (
	DefaultVersion            = "v1"
	DefaultPollingInterval    = Duration(30 * time.Second)
	DefaultHealthCheckTimeout = Duration(30 * time.Second)
	DefaultDrainTimeout       = Duration(30 * time.Second)
	DefaultStrategy           = StrategyRolling
	DefaultSignal             = "SIGHUP"
	DefaultAPIAddress         = "127.0.0.1:8471"
	DefaultSocket             = "/run/dso/dso.sock"
	DefaultRetryAttempts      = 3
	DefaultRetryBackoff       = Duration(time.Second)
	DefaultCacheMaxAge        = Duration(24 * time.Hour)
)

func first[T comparable](vals ...T) T {
	var zero T
	for _, v := range vals {
		if v != zero {
			return v
		}
	}
	return zero
}

// DefaultProvider is the provider of a secret or reference that names
// none: defaults.provider, else the only provider; "" when there is
// neither. Loading fills defaults.provider with it; resolve, doctor and
// validation ask here too, so that the rule lives in one place.
func (c *Config) DefaultProvider() string {
	if c.Defaults.Provider != "" || len(c.Providers) != 1 {
		return c.Defaults.Provider
	}
	return providerNames(c)[0]
}

// defaultStrategy is the strategy of a secret that sets none.
func (c *Config) defaultStrategy() Strategy {
	return first(c.Defaults.Rotation.Strategy, c.Agent.Rotation.Strategy, DefaultStrategy)
}

// defaultEnabled is whether a secret that does not say is rotated.
func (c *Config) defaultEnabled() bool {
	switch {
	case c.meta.set("defaults.rotation.enabled"):
		return c.Defaults.Rotation.Enabled
	case c.meta.set("agent.rotation.enabled"):
		return c.Agent.Rotation.Enabled
	}
	return true
}

// applyDefaults fills what the file left unset, once it is valid, so that
// the rest of DSO reads every value from the Config.
func applyDefaults(c *Config) {
	m := c.meta
	c.Version = first(c.Version, DefaultVersion)
	c.Mode = first(c.Mode, ModeLocal)
	if c.Secrets == nil {
		c.Secrets = []Secret{}
	}
	for name, p := range c.Providers {
		pp := join("providers", name)
		if p.Type == ProviderVault && p.Address == "" && p.Auth.Params["address"] != "" {
			p.Address = p.Auth.Params["address"]
			if vars := m.fromEnv[pp+".auth.params.address"]; vars != nil {
				m.fromEnv[pp+".address"] = vars
			}
		}
		if !m.set(pp + ".retry.attempts") {
			p.Retry.Attempts = DefaultRetryAttempts
		}
		if !m.set(pp + ".retry.backoff") {
			p.Retry.Backoff = DefaultRetryBackoff
		}
		c.Providers[name] = p
	}

	a := &c.Agent
	if !m.set("agent.cache.enabled") {
		a.Cache.Enabled = true
	}
	if !m.set("agent.cache.max_age") {
		a.Cache.MaxAge = DefaultCacheMaxAge
	}
	a.Watch.Mode = first(a.Watch.Mode, WatchPolling)
	if !m.set("agent.watch.polling_interval") {
		a.Watch.PollingInterval = DefaultPollingInterval
	}
	if !m.set("agent.rotation.enabled") {
		a.Rotation.Enabled = true
	}
	a.Rotation.Strategy = first(a.Rotation.Strategy, DefaultStrategy)
	if !m.set("agent.rotation.health_check_timeout") {
		a.Rotation.HealthCheckTimeout = DefaultHealthCheckTimeout
	}
	if !m.set("agent.rotation.drain_timeout") {
		a.Rotation.DrainTimeout = DefaultDrainTimeout
	}
	a.API.Address = first(a.API.Address, DefaultAPIAddress)
	a.Socket = first(a.Socket, DefaultSocket)
	for i := range a.Notify {
		if len(a.Notify[i].Events) == 0 {
			a.Notify[i].Events = []NotifyEvent{NotifySuccess, NotifyFailure}
		}
	}

	strategy, enabled := c.defaultStrategy(), c.defaultEnabled()
	d := &c.Defaults
	d.Provider = c.DefaultProvider()
	d.Inject.Type = first(d.Inject.Type, InjectEnv)
	d.Rotation.Strategy = strategy
	d.Rotation.Enabled = enabled
	fillRotation(&d.Rotation)

	for i := range c.Secrets {
		s := &c.Secrets[i]
		sp := "secrets[" + strconv.Itoa(i) + "]"
		s.Provider = first(s.Provider, d.Provider)
		s.Inject.Type = first(s.Inject.Type, d.Inject.Type)
		if s.Inject.Type == InjectFile {
			s.Inject.UID = first(s.Inject.UID, d.Inject.UID)
			s.Inject.GID = first(s.Inject.GID, d.Inject.GID)
			s.Inject.Mode = first(s.Inject.Mode, d.Inject.Mode)
		}
		if !m.set(sp + ".rotation.enabled") {
			s.Rotation.Enabled = enabled
		}
		s.Rotation.Strategy = first(s.Rotation.Strategy, strategy)
		if s.Rotation.Signal == "" && s.Rotation.Strategy == d.Rotation.Strategy {
			s.Rotation.Signal = d.Rotation.Signal
		}
		fillRotation(&s.Rotation)
		if s.Mappings == nil {
			s.Mappings = map[string]string{}
		}
	}
}

func fillRotation(r *Rotation) {
	if r.Strategy == StrategySignal {
		r.Signal = first(r.Signal, DefaultSignal)
	}
}
