package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsAreRecordedInTheirOwnRegistry(t *testing.T) {
	a, b := New(), New()
	at := time.Unix(1700000000, 0)
	a.ObserveRotation("restart", ResultSuccess, 1500*time.Millisecond)
	a.ObserveProvider("aws", OpVersion, nil, 20*time.Millisecond, at)
	a.ObserveProvider("aws", OpFetch, errors.New("boom"), time.Second, at.Add(time.Hour))
	a.ObserveDelivery(nil)
	a.SecretsWatched.Set(3)

	if got := testutil.ToFloat64(a.Rotations.WithLabelValues("restart", ResultSuccess)); got != 1 {
		t.Fatalf("rotations = %v", got)
	}
	if got := testutil.ToFloat64(a.ProviderRequests.WithLabelValues("aws", OpFetch, ResultFailure)); got != 1 {
		t.Fatalf("failed fetches = %v", got)
	}
	if got := testutil.ToFloat64(a.LastSuccessfulPoll); got != 1700000000 {
		t.Fatalf("last successful poll = %v; a failed fetch must not move it", got)
	}
	if got := testutil.ToFloat64(b.SecretsWatched); got != 0 {
		t.Fatal("two Metrics share state")
	}
	want := `
# HELP dso_deliveries_total Deliveries of secrets into containers by result.
# TYPE dso_deliveries_total counter
dso_deliveries_total{result="success"} 1
`
	if err := testutil.GatherAndCompare(a.Registry, strings.NewReader(want), "dso_deliveries_total"); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(a.Registry, "dso_rotation_duration_seconds", "dso_provider_request_duration_seconds", "process_resident_memory_bytes")
	if err != nil || n != 4 {
		t.Fatalf("histograms + process collector: %d series, %v", n, err)
	}
}
