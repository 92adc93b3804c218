package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// Real applications from Debian's packages, in an image made with mmdebstrap
// and `docker import` (testbed.DebianImage: no CMD, no ENTRYPOINT), run with
// `docker dso up` as a user would run them.

// appDeadline bounds how long a real application may take to come up on a
// shared machine (initdb, nginx, redis).
const appDeadline = 3 * time.Minute

// waitLog polls the container's output until it holds want.
func waitLog(t *testing.T, id, want string) string {
	t.Helper()
	deadline := time.Now().Add(appDeadline)
	for {
		stdout, stderr := testbed.Logs(t, id)
		if strings.Contains(stdout+stderr, want) {
			return stdout + stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s never printed %q; its output:\n%s%s", id[:12], want, stdout, stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// execOK runs a command in the container and requires exit code 0.
func execOK(t *testing.T, id string, cmd ...string) string {
	t.Helper()
	out, code := testbed.Exec(t, id, testbed.ExecOptions{}, cmd...)
	if code != 0 {
		t.Fatalf("%q in %s: exit %d\n%s", cmd, id[:12], code, out)
	}
	return strings.TrimSpace(out)
}

// imageID returns the numeric id of a user or group of the image, as
// `id -u NAME` or `id -g NAME` prints it.
func imageID(t *testing.T, image, flag, name string) string {
	t.Helper()
	id := testbed.RunContainer(t, client.ContainerCreateOptions{Config: &container.Config{Image: image, Cmd: []string{"id", flag, name}}})
	if code := testbed.WaitExit(t, id, time.Minute); code != 0 {
		t.Fatalf("id %s %s in %s: exit %d", flag, name, image, code)
	}
	out, _ := testbed.Logs(t, id)
	return strings.TrimSpace(out)
}

// pgEntrypoint starts as root, as the entrypoint of the official postgres
// image does, checks that it can read the password file, then drops
// privileges to postgres for initdb --pwfile (the first time the data
// directory is used) and the server, with options added to its command line.
func pgEntrypoint(options string) string {
	return `set -eu
[ "$(id -u)" = 0 ]
head -c 0 "$POSTGRES_PASSWORD_FILE"
export PGDATA=/var/lib/postgresql/data
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
exec setpriv --reuid=postgres --regid=postgres --init-groups /bin/sh -eu -c '
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	/usr/lib/postgresql/15/bin/initdb -U postgres --pwfile="$POSTGRES_PASSWORD_FILE" --auth-local=trust --auth-host=scram-sha-256
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
fi
exec /usr/lib/postgresql/15/bin/postgres -c listen_addresses="*" -k /tmp` + options + `'
`
}

// TestPostgresPasswordFileAndClient: PostgreSQL 15 initialised with
// `initdb --pwfile` from a dsofile:// secret, by an entrypoint that reads it
// as root and then drops privileges (the file is given to root:postgres,
// mode 0440, by the reference), and a client logging in with PGPASSWORD
// from dso://.
func TestPostgresPasswordFileAndClient(t *testing.T) {
	u := newUser(t)
	password := canary(t, "pg")
	image := testbed.DebianImage(t)
	gid := imageID(t, image, "-g", "postgres")
	dir := writeProject(t, map[string]string{
		"db-entrypoint.sh": pgEntrypoint(""),
		"compose.yaml": `
services:
  db:
    image: ` + image + `
    entrypoint: ["/bin/sh", "/db-entrypoint.sh"]
    volumes: ["./db-entrypoint.sh:/db-entrypoint.sh:ro"]
    environment:
      POSTGRES_PASSWORD_FILE: dsofile://app/pg_password?uid=0&gid=` + gid + `&mode=0440
  client:
    image: ` + image + `
    user: postgres
    environment:
      PGPASSWORD: dso://app/pg_password
    command: ["/bin/sh", "-c", "until psql -h db -U postgres -tAc \"select 'logged in as ' || current_user\"; do sleep 1; done; exec sleep infinity"]
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/pg_password": password})

	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	db, psql := serviceContainer(t, project, "db"), serviceContainer(t, project, "client")
	waitLog(t, psql, "logged in as postgres")

	if got := execOK(t, db, "stat", "-c", "%u %g %a", "/run/dso/secrets/POSTGRES_PASSWORD_FILE"); got != "0 "+gid+" 440" {
		t.Errorf("password file owner and mode = %q, want 0 %s 440", got, gid)
	}
	users := strings.Fields(execOK(t, db, "ps", "-o", "user=", "-C", "postgres"))
	if len(users) == 0 || slices.ContainsFunc(users, func(u string) bool { return u != "postgres" }) {
		t.Errorf("the server's processes run as %q, want postgres only (privileges dropped)", users)
	}
	// The password is really checked: a wrong one is refused.
	out, code := testbed.Exec(t, psql, testbed.ExecOptions{Env: []string{"PGPASSWORD=wrong-password"}}, "psql", "-h", "db", "-U", "postgres", "-c", "select 1")
	if code == 0 || !strings.Contains(out, "password authentication failed") {
		t.Errorf("a wrong password logged in (exit %d): %s", code, out)
	}

	logs := u.must(dir, nil, "dso", "logs", "-p", project)
	assertNoLeak(t, u, [][]byte{password}, up.output(), logs.output())
}

// TestUpRefusesOwnerForNonRootService: only a service running as root can
// give its secret files to another user; up says so and creates nothing.
func TestUpRefusesOwnerForNonRootService(t *testing.T) {
	u := newUser(t)
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    user: "1000:1000"
    environment:
      KEY_FILE: dsofile://app/key?uid=0&mode=0440
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/key": []byte("x")})
	r := u.run(dir, nil, "dso", "up", "-p", project, "-d")
	if r.code != 3 {
		t.Errorf("exit code %d, want 3\n%s", r.code, r.output())
	}
	for _, want := range []string{`service "api", variable KEY_FILE`, "needs the service to run as root", "1000:1000"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error does not say %q:\n%s", want, r.stderr)
		}
	}
	assertNoContainers(t, project)

	dir2 := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: x
    environment:
      KEY_FILE: dsofile://app/key?mode=4755
`})
	bad := u.run(dir2, nil, "dso", "up", "-p", project, "-d")
	if bad.code != 4 || !strings.Contains(bad.stderr, "octal mode from 0000 to 0777") {
		t.Errorf("a setuid mode: exit %d, want 4 and the allowed modes\n%s", bad.code, bad.output())
	}
	assertNoContainers(t, project)
}

// assertNoContainers checks that the project has no container at all.
func assertNoContainers(t *testing.T, project string) {
	t.Helper()
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project)
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("a refused up created %d containers", len(list.Items))
	}
}

// nginxConf serves HTTPS with the certificate and key DSO delivers; nginx
// re-reads them on SIGHUP.
const nginxConf = `worker_processes 2;
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
	access_log off;
	server {
		listen 443 ssl;
		ssl_certificate /run/dso/secrets/TLS_CERT;
		ssl_certificate_key /run/dso/secrets/TLS_KEY;
		location / { return 200 "ok\n"; }
	}
}
`

// TestNginxTLSRotationUnderLoad: nginx serves HTTPS with its certificate
// and key from dsofile:// (two fields of one JSON secret, so that they
// change together); the secret changes while clients keep asking, the
// signal strategy rewrites the files and sends SIGHUP, nginx reloads them,
// and no request fails.
func TestNginxTLSRotationUnderLoad(t *testing.T) {
	u := newUser(t)
	image := testbed.DebianImage(t)
	oldCert, oldKey := selfSigned(t)
	newCert, newKey := selfSigned(t)
	dir := writeProject(t, map[string]string{
		"nginx.conf": nginxConf,
		"compose.yaml": `
services:
  web:
    image: ` + image + `
    ports: ["127.0.0.1::443"]
    labels:
      dso.update.strategy: signal
    volumes: ["./nginx.conf:/etc/nginx/dso.conf:ro"]
    environment:
      TLS_CERT: dsofile://app/tls#cert
      TLS_KEY: dsofile://app/tls#key
    command: ["nginx", "-c", "/etc/nginx/dso.conf", "-g", "daemon off;"]
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/tls": tlsJSON(t, oldCert, oldKey)})
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	web := serviceContainer(t, project, "web")
	addr := testbed.HostAddr(t, web, "443/tcp")

	roots := x509.NewCertPool()
	for _, c := range [][]byte{oldCert, newCert} {
		roots.AppendCertsFromPEM(c)
	}
	oldDER, newDER := certDER(t, oldCert), certDER(t, newCert)
	served := func(resp *http.Response) []byte { return resp.TLS.PeerCertificates[0].Raw }
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}}
	waitFor(t, "nginx serving HTTPS with the first certificate", func() bool {
		resp, err := probe.Get("https://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && string(served(resp)) == string(oldDER)
	})

	// Steady load: workers on fresh connections (each one a TLS handshake
	// with the certificate in use) and workers on kept-alive connections.
	var (
		ok, failed, sawNew atomic.Int64
		firstNew           atomic.Int64 // unix nanoseconds of the first answer with the new certificate
		firstErr           sync.Once
		errText            atomic.Value
		stop               = make(chan struct{})
		wg                 sync.WaitGroup
	)
	for i := range 4 {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: i%2 == 0}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tr.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Get("https://" + addr + "/")
				if err == nil && resp.StatusCode != http.StatusOK {
					err = &net.AddrError{Err: resp.Status, Addr: addr}
				}
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { errText.Store(err.Error()) })
					continue
				}
				if string(served(resp)) == string(newDER) && sawNew.Add(1) == 1 {
					firstNew.Store(time.Now().UnixNano())
				}
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}
	waitFor(t, "requests under load before the rotation", func() bool { return ok.Load() >= 50 })
	before := ok.Load()
	set := u.must("", tlsJSON(t, newCert, newKey), "dso", "secret", "set", "app/tls")
	start := time.Now()
	waitFor(t, "the new certificate on fresh connections", func() bool { return sawNew.Load() >= 200 })
	close(stop)
	wg.Wait()

	t.Logf("nginx rotation under load: %d requests (%d before the change, %d with the new certificate), %d failed; first answer with the new certificate %v after `secret set` returned",
		ok.Load()+failed.Load(), before, sawNew.Load(), failed.Load(), time.Unix(0, firstNew.Load()).Sub(start).Round(10*time.Millisecond))
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the rotation (first: %v)", n, errText.Load())
	}
	if now := serviceContainer(t, project, "web"); now != web {
		t.Errorf("the container changed (%s -> %s): a signal rotation keeps it", web[:12], now[:12])
	}

	logs := u.must(dir, nil, "dso", "logs", "-p", project)
	assertNoLeak(t, u, [][]byte{oldKey, newKey, keyLine(oldKey), keyLine(newKey)}, up.output(), set.output(), logs.output())
}

// redisScript gives redis-server its configuration on stdin (a heredoc is a
// pipe in dash: nothing on disk, nothing in argv), with requirepass from the
// environment DSO filled.
const redisScript = `exec redis-server - <<EOF
port 6379
bind * -::*
protected-mode no
save ""
appendonly no
requirepass $REDIS_PASSWORD
EOF
`

// TestRedisPasswordOnImportedImageAsNamedUser: Redis from an imported image
// (no CMD), running as the image's named user redis, with requirepass from
// dso://; a client with REDISCLI_AUTH from dso:// is let in, a client
// without it is not.
func TestRedisPasswordOnImportedImageAsNamedUser(t *testing.T) {
	u := newUser(t)
	password := canary(t, "redis")
	image := testbed.DebianImage(t)
	dir := writeProject(t, map[string]string{
		"redis.sh": redisScript,
		"compose.yaml": `
services:
  cache:
    image: ` + image + `
    user: redis
    volumes: ["./redis.sh:/redis.sh:ro"]
    environment:
      REDIS_PASSWORD: dso://app/redis_password
    command: ["/bin/sh", "/redis.sh"]
  client:
    image: ` + image + `
    user: redis
    environment:
      REDISCLI_AUTH: dso://app/redis_password
    command: ["/bin/sh", "-c", "until redis-cli -h cache set greeting hello-from-client | grep -q OK; do sleep 1; done; echo got $$(redis-cli -h cache get greeting); exec sleep infinity"]
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/redis_password": password})

	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	cache, cli := serviceContainer(t, project, "cache"), serviceContainer(t, project, "client")
	waitLog(t, cli, "got hello-from-client")

	redisUID := imageID(t, image, "-u", "redis")
	if got := execOK(t, cache, "stat", "-c", "%u %a", "/run/dso"); got != redisUID+" 700" {
		t.Errorf("the secrets tmpfs is %q, want owned by redis (%s), 700", got, redisUID)
	}
	if got := execOK(t, cache, "ps", "-o", "user=", "-C", "redis-server"); got != "redis" {
		t.Errorf("redis-server runs as %q, want redis", got)
	}
	if out, _ := testbed.Exec(t, cache, testbed.ExecOptions{}, "redis-cli", "get", "greeting"); !strings.Contains(out, "NOAUTH") {
		t.Errorf("a client without the password was let in: %q", out)
	}

	logs := u.must(dir, nil, "dso", "logs", "-p", project)
	assertNoLeak(t, u, [][]byte{password}, up.output(), logs.output())
}

// selfSigned returns a PEM certificate for 127.0.0.1 and its PEM key.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "dso-test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func certDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	return b.Bytes
}

// keyLine is the first base64 line of a PEM key: a canary for a key that
// leaks in part.
func keyLine(keyPEM []byte) []byte {
	lines := strings.Split(string(keyPEM), "\n")
	return []byte(lines[1])
}

// tlsJSON is the JSON secret holding a certificate and its key.
func tlsJSON(t *testing.T, cert, key []byte) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"cert": string(cert), "key": string(key)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
