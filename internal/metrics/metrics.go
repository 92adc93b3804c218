// Package metrics defines the agent's Prometheus metrics. They live in a
// struct with its own registry, passed to whatever records them; nothing
// here is global. Labels carry names (strategy, provider, operation,
// result), never secret names' values.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the agent's metrics and the registry that serves them.
type Metrics struct {
	Registry *prometheus.Registry

	Rotations          *prometheus.CounterVec   // strategy, result
	RotationDuration   *prometheus.HistogramVec // strategy
	ProviderRequests   *prometheus.CounterVec   // provider, operation, result
	ProviderLatency    *prometheus.HistogramVec // provider, operation
	SecretsWatched     prometheus.Gauge
	Deliveries         *prometheus.CounterVec // result
	LastSuccessfulPoll prometheus.Gauge       // unix seconds
	// CacheServed counts values delivered from the agent's last-known-good
	// cache because their provider failed.
	CacheServed         prometheus.Counter
	CacheSecrets        prometheus.Gauge       // secrets held in the cache
	ContainersFromCache prometheus.Gauge       // containers holding a cached value
	ContainersWaiting   prometheus.Gauge       // containers waiting for their secrets
	ProxySwitch         prometheus.Histogram   // time for a proxy to take new backends
	ProxyDrained        *prometheus.CounterVec // outcome: drained | closed
	// SwarmSecrets counts the Swarm manager's GetSecret calls to the
	// secret driver, by result.
	SwarmSecrets *prometheus.CounterVec // result
}

// New creates the metrics in a fresh registry, with the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dso", Name: "rotations_total",
			Help: "Container rotations by strategy and result.",
		}, []string{"strategy", "result"}),
		RotationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "dso", Name: "rotation_duration_seconds",
			Help:    "Time from the start of a rotation to its end.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120},
		}, []string{"strategy"}),
		ProviderRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dso", Name: "provider_requests_total",
			Help: "Requests to secret providers by provider, operation and result.",
		}, []string{"provider", "operation", "result"}),
		ProviderLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "dso", Name: "provider_request_duration_seconds",
			Help:    "Latency of requests to secret providers.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"provider", "operation"}),
		SecretsWatched: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "dso", Name: "secrets_watched",
			Help: "Secrets the agent is watching for changes.",
		}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dso", Name: "deliveries_total",
			Help: "Deliveries of secrets into containers by result.",
		}, []string{"result"}),
		LastSuccessfulPoll: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "dso", Name: "last_successful_poll_timestamp_seconds",
			Help: "Unix time of the last version check that succeeded.",
		}),
		CacheServed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "dso", Name: "cache_served_total",
			Help: "Values delivered from the agent's last-known-good cache because their provider failed.",
		}),
		CacheSecrets: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "dso", Name: "cache_secrets",
			Help: "Secrets whose last-known-good values the agent holds in memory.",
		}),
		ContainersFromCache: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "dso", Name: "containers_from_cache",
			Help: "Running containers that hold a value served from the cache, not yet confirmed by its provider.",
		}),
		ContainersWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "dso", Name: "containers_waiting",
			Help: "Started containers waiting for their secrets (deliveries being retried).",
		}),
		ProxySwitch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "dso", Name: "proxy_switch_seconds",
			Help:    "Time from the agent's order to a proxy sending new connections to new backends.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}),
		ProxyDrained: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dso", Name: "proxy_drained_connections_total",
			Help: "Connections of replaced containers at the end of a drain: drained (ended by themselves) or closed (still open at the bound).",
		}, []string{"outcome"}),
		SwarmSecrets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dso", Name: "swarm_secret_requests_total",
			Help: "GetSecret calls of the Swarm manager to the dso secret driver by result (failure: refused or not resolved).",
		}, []string{"result"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Rotations, m.RotationDuration, m.ProviderRequests, m.ProviderLatency,
		m.SecretsWatched, m.Deliveries, m.LastSuccessfulPoll,
		m.CacheServed, m.CacheSecrets, m.ContainersFromCache, m.ContainersWaiting,
		m.ProxySwitch, m.ProxyDrained, m.SwarmSecrets,
	)
	return m
}

// Result label values.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
)

func result(err error) string {
	if err != nil {
		return ResultFailure
	}
	return ResultSuccess
}

// ObserveRotation records one finished rotation.
func (m *Metrics) ObserveRotation(strategy, result string, d time.Duration) {
	m.Rotations.WithLabelValues(strategy, result).Inc()
	m.RotationDuration.WithLabelValues(strategy).Observe(d.Seconds())
}

// ObserveProvider records one provider request; a successful "version"
// check also moves the last-successful-poll time.
func (m *Metrics) ObserveProvider(provider, operation string, err error, d time.Duration, at time.Time) {
	m.ProviderRequests.WithLabelValues(provider, operation, result(err)).Inc()
	m.ProviderLatency.WithLabelValues(provider, operation).Observe(d.Seconds())
	if err == nil && operation == OpVersion {
		m.LastSuccessfulPoll.Set(float64(at.UnixNano()) / 1e9)
	}
}

// ObserveDelivery records one delivery into a container.
func (m *Metrics) ObserveDelivery(err error) { m.Deliveries.WithLabelValues(result(err)).Inc() }

// ObserveSwarmSecret records one GetSecret call of the Swarm secret driver.
func (m *Metrics) ObserveSwarmSecret(ok bool) {
	r := ResultSuccess
	if !ok {
		r = ResultFailure
	}
	m.SwarmSecrets.WithLabelValues(r).Inc()
}

// Provider operations.
const (
	OpVersion = "version" // a version check (polling)
	OpFetch   = "fetch"   // a value fetch
)
