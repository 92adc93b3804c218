package providertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/awssm"
	"github.com/dso-project/dso/internal/provider/awssm/awssmtest"
	"github.com/dso-project/dso/internal/provider/azurekv"
	"github.com/dso-project/dso/internal/provider/azurekv/azurekvtest"
	"github.com/dso-project/dso/internal/provider/local"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/provider/vault"
	"github.com/dso-project/dso/internal/testbed"
)

var (
	vaultSrv  *providertest.VaultServer
	vaultSkip string
)

func TestMain(m *testing.M) {
	bin, err := providertest.VaultBinary()
	if err != nil {
		if testbed.InCI() {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
		vaultSkip = err.Error()
		os.Exit(m.Run())
	}
	if vaultSrv, err = providertest.StartVault(bin); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	code := m.Run()
	vaultSrv.Stop()
	os.Exit(code)
}

// backends holds n secrets "bench/sI" (a JSON object with keys value and
// user) in each of Vault, AWS (kumo), Azure (test server) and a local
// vault, and counts the calls each server gets.
type backends struct {
	n          int
	vaultProxy *providertest.Proxy
	aws        *awssmtest.Env
	az         *azurekvtest.Server
	local      *localVault
}

func newBackends(t testing.TB, n int, awsBatch bool) *backends {
	t.Helper()
	if vaultSrv == nil {
		t.Skip(vaultSkip)
	}
	b := &backends{n: n, aws: awssmtest.Start(t, awsBatch), local: newLocalVault(t)}
	az, err := azurekvtest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(az.Close)
	b.az = az
	root, err := api.NewClient(&api.Config{Address: vaultSrv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(vaultSrv.Token)
	b.vaultProxy = providertest.NewProxy(t, vaultSrv.Addr, nil)

	entries := map[string][]byte{}
	for i := range n {
		v, _ := json.Marshal(map[string]string{"value": fmt.Sprint("v-", i), "user": fmt.Sprint("u-", i)})
		entries[fmt.Sprint("bench/s", i)] = v
	}
	if err := updateLocal(b.local, entries); err != nil {
		t.Fatal(err)
	}
	for name, v := range entries {
		var data map[string]any
		_ = json.Unmarshal(v, &data)
		if _, err := root.Logical().Write("secret/data/"+name, map[string]any{"data": data}); err != nil {
			t.Fatal(err)
		}
		b.aws.Put(t, name, v)
		b.az.Set(strings.ReplaceAll(name, "/", "-"), string(v))
	}
	b.reset()
	return b
}

func updateLocal(l *localVault, entries map[string][]byte) error {
	return vaultfileUpdate(l, func(set func(string, []byte) error) error {
		for name, v := range entries {
			if err := set(name, v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (b *backends) reset() {
	b.vaultProxy.Reset()
	b.aws.Proxy.Reset()
	b.az.Reset()
}

// providers returns fresh providers, as one `docker dso up` makes them.
func (b *backends) providers(t testing.TB) map[string]provider.Provider {
	t.Helper()
	v, err := vault.New(vault.Options{Address: b.vaultProxy.URL, Token: vaultSrv.Token})
	if err != nil {
		t.Fatal(err)
	}
	a, err := awssm.New(awssm.Options{Region: awssmtest.Region, Endpoint: b.aws.Proxy.URL, Credentials: awssmtest.Credentials})
	if err != nil {
		t.Fatal(err)
	}
	z, err := azurekv.New(azurekv.Options{VaultURL: b.az.URL, Credential: b.az.Credential(), HTTPClient: b.az.HTTPClient(b.az.Addr())})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]provider.Provider{"vault": v, "aws": a, "azure": z, "local": local.New(b.local.path, b.local.key)}
}

// calls returns the calls each server got since the last reset, by kind.
func (b *backends) calls() map[string]map[string]int {
	out := map[string]map[string]int{"vault": {}, "aws": b.aws.Proxy.Counts(), "azure": b.az.Counts()}
	for k, c := range b.vaultProxy.Counts() {
		switch {
		case strings.HasPrefix(k, "GET /v1/secret/data/"):
			out["vault"]["data"] += c
		case strings.HasPrefix(k, "GET /v1/secret/metadata/"):
			out["vault"]["metadata"] += c
		default:
			out["vault"]["other"] += c
		}
	}
	return out
}

func total(m map[string]int) (n int) {
	for _, c := range m {
		n += c
	}
	return n
}

// refsPerProvider references over distinctPerProvider secrets, half of
// them with #value and half with #user: 4 providers x 50 = 200 references.
const (
	refsPerProvider     = 50
	distinctPerProvider = 30
)

// resolve200 resolves the 200 references with one GetMany per provider,
// the providers in parallel, and checks every value.
func resolve200(t testing.TB, ps map[string]provider.Provider) {
	var wg sync.WaitGroup
	for name, p := range ps {
		wg.Go(func() {
			paths := make([]string, refsPerProvider)
			for i := range paths {
				paths[i] = fmt.Sprint("bench/s", i%distinctPerProvider)
				if name == "vault" {
					paths[i] = "secret/" + paths[i]
				}
			}
			res := provider.GetMany(context.Background(), p, paths)
			for i, path := range paths {
				key := "value"
				if i%2 == 1 {
					key = "user"
				}
				r := res[path]
				if r.Err != nil {
					t.Errorf("%s %s: %v", name, path, r.Err)
					continue
				}
				v, err := provider.Field(r.Secret.Value, key)
				if err != nil || !strings.HasSuffix(string(v), fmt.Sprint("-", i%distinctPerProvider)) {
					t.Errorf("%s %s#%s = %q, %v", name, path, key, v, err)
				}
			}
		})
	}
	wg.Wait()
}

// TestResolve200Calls counts the backend calls made to resolve 200
// references: each distinct secret is fetched once (dedupe), AWS in
// batches of 20, Vault with one mount lookup.
func TestResolve200Calls(t *testing.T) {
	for _, batch := range []bool{true, false} {
		b := newBackends(t, distinctPerProvider, batch)
		resolve200(t, b.providers(t))
		c := b.calls()
		n := total(c["vault"]) + total(c["aws"]) + total(c["azure"])
		t.Logf("AWS batch call available=%v: %d calls for 200 references (%.3f per reference): vault %v, aws %v, azure %v, local 0 (one file read)",
			batch, n, float64(n)/200, c["vault"], c["aws"], c["azure"])
		want := map[string]int{"vault": distinctPerProvider + 1, "azure": distinctPerProvider, "aws": 2}
		if !batch {
			want["aws"] = 1 + distinctPerProvider // the refused batch call, then single gets
		}
		for name, w := range want {
			if got := total(c[name]); got != w {
				t.Errorf("%s: %d calls, want %d", name, got, w)
			}
		}
	}
}

func BenchmarkResolve200(b *testing.B) {
	for _, batch := range []bool{true, false} {
		b.Run(fmt.Sprintf("aws-batch=%v", batch), func(b *testing.B) {
			env := newBackends(b, distinctPerProvider, batch)
			var calls int
			for b.Loop() {
				env.reset()
				resolve200(b, env.providers(b))
				c := env.calls()
				calls += total(c["vault"]) + total(c["aws"]) + total(c["azure"])
			}
			b.ReportMetric(float64(calls)/float64(b.N)/200, "calls/ref")
		})
	}
}

// check1000 asks the version of 1,000 secrets, 250 in each backend, with
// up to 8 calls in flight per provider.
func check1000(t testing.TB, ps map[string]provider.Provider, n int) {
	var wg sync.WaitGroup
	for name, p := range ps {
		sem := make(chan struct{}, 8)
		for i := range n {
			path := fmt.Sprint("bench/s", i)
			if name == "vault" {
				path = "secret/" + path
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := p.Version(context.Background(), path); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			})
		}
	}
	wg.Wait()
}

// TestCheck1000UnchangedMakesOnlyMetadataCalls: checking 1,000 unchanged
// secrets for a change reads no value at any server.
func TestCheck1000UnchangedMakesOnlyMetadataCalls(t *testing.T) {
	b := newBackends(t, 250, false)
	ps := b.providers(t)
	check1000(t, ps, 250)
	c := b.calls()
	t.Logf("1,000 version checks: vault %v, aws %v, azure %v, local: file stat only", c["vault"], c["aws"], c["azure"])
	if c["vault"]["data"] != 0 || c["aws"]["GetSecretValue"] != 0 || c["aws"]["BatchGetSecretValue"] != 0 || c["azure"]["get"] != 0 {
		t.Errorf("a version check read a value")
	}
	if c["vault"]["metadata"] != 250 || c["aws"]["DescribeSecret"] != 250 || c["azure"]["versions"] != 250 {
		t.Errorf("want one metadata call per secret")
	}
}

func BenchmarkCheck1000Unchanged(b *testing.B) {
	env := newBackends(b, 250, false)
	ps := env.providers(b)
	var calls int
	for b.Loop() {
		env.reset()
		check1000(b, ps, 250)
		c := env.calls()
		calls += total(c["vault"]) + total(c["aws"]) + total(c["azure"])
	}
	b.ReportMetric(float64(calls)/float64(b.N)/1000, "calls/secret")
}
