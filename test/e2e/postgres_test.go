package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// pgTLSOptions turn TLS on: the server reads its certificate and key,
// delivered by dsofile:// (root:postgres, 0440, as PostgreSQL accepts for a
// key owned by root), at every start, unlike the password file, which only
// initdb reads, the first time the volume is used.
const pgTLSOptions = ` -c ssl=on -c ssl_cert_file="$PG_TLS_CERT" -c ssl_key_file="$PG_TLS_KEY"`

// pgClient runs psql on the host against addr as postgres, over TLS, with
// the password in its environment (never in argv).
type pgClient struct {
	host, port string
	password   []byte
}

// query runs one statement in a new connection; psql's exit code 0 means
// the server acknowledged it (autocommit: an INSERT is committed).
func (c pgClient) query(ctx context.Context, sql string) (string, error) {
	cmd := exec.CommandContext(ctx, "psql", "-X", "-q", "-h", c.host, "-p", c.port, "-U", "postgres", "-d", "postgres",
		"-v", "ON_ERROR_STOP=1", "-tAc", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+string(c.password), "PGSSLMODE=require")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql %q: %v: %s", sql, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// servedCert returns the certificate PostgreSQL at addr presents: the
// protocol's SSLRequest, then a TLS handshake.
func servedCert(addr string) ([]byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	if _, err := conn.Write(req); err != nil {
		return nil, err
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(conn, answer); err != nil || answer[0] != 'S' {
		return nil, fmt.Errorf("the server did not accept TLS (%q, %v)", answer, err)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // the test compares the certificate itself
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0].Raw, nil
}

// insert is one client connection of the load: one INSERT.
type insert struct {
	id         int
	start, end time.Time
	err        error
}

// TestPostgresStopFirstUnderLoad: a real PostgreSQL 15 with its data on a
// named volume, rolling with a host port (so behind the proxy, stop-first),
// under a steady load of clients (psql on the host, a new connection and one
// INSERT each). Its TLS certificate and key, which the server reads at
// start, are rotated: the server then presents the new certificate; every
// client connecting while no server was ready waited and succeeded;
// every acknowledged INSERT is in the table afterwards; one postgres
// container is left, under its compose name, and two postgres servers never
// ran at once (the new container may start while the old one stops; its
// server starts only with its secrets, once the old one has stopped).
func TestPostgresStopFirstUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		if testbed.InCI() {
			t.Fatal("psql is not installed (Debian: postgresql-client)")
		}
		t.Skip("psql is not installed")
	}
	u := newUser(t)
	image := testbed.DebianImage(t)
	gid := imageID(t, image, "-g", "postgres")
	password := canary(t, "pg")
	oldCert, oldKey := selfSigned(t)
	newCert, newKey := selfSigned(t)
	perm := "?uid=0&gid=" + gid + "&mode=0440"
	dir := writeProject(t, map[string]string{
		"db-entrypoint.sh": pgEntrypoint(pgTLSOptions),
		"compose.yaml": `
services:
  db:
    image: ` + image + `
    entrypoint: ["/bin/sh", "/db-entrypoint.sh"]
    stop_signal: SIGINT
    ports: ["127.0.0.1::5432"]
    volumes: ["./db-entrypoint.sh:/db-entrypoint.sh:ro", "pgdata:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-U", "postgres"]
      interval: 1s
      timeout: 5s
      retries: 120
    environment:
      POSTGRES_PASSWORD_FILE: dsofile://app/pg_password` + perm + `
      PG_TLS_CERT: dsofile://app/pg_tls` + perm + `#cert
      PG_TLS_KEY: dsofile://app/pg_tls` + perm + `#key
volumes:
  pgdata: {}
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/pg_password": password, "app/pg_tls": tlsJSON(t, oldCert, oldKey)})
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")

	addr := ""
	waitFor(t, "the proxy of db", func() bool { addr = proxyAddr(t, project, "db", 5432); return addr != "" })
	host, port, _ := net.SplitHostPort(addr)
	pg := pgClient{host: host, port: port, password: password}
	deadline := time.Now().Add(appDeadline)
	for {
		_, err := pg.query(t.Context(), "CREATE TABLE acked (id int PRIMARY KEY)")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL never answered through the proxy at %s: %v", addr, err)
		}
		time.Sleep(time.Second)
	}
	if got, err := servedCert(addr); err != nil || !bytes.Equal(got, certDER(t, oldCert)) {
		t.Fatalf("before the rotation the server does not present the first certificate (%v)", err)
	}

	// The swap, as the engine shows it: from the old container no longer
	// running to the new one healthy; and how many servers ran at once.
	var (
		mu                  sync.Mutex
		swapFrom, swapUntil time.Time
		most                atomic.Int64
		oldID               = serviceContainer(t, project, "db")
		stopWatch           = make(chan struct{})
		watched             = make(chan struct{})
	)
	go func() {
		defer close(watched)
		f := client.Filters{}.Add("label", "com.docker.compose.project="+project, "com.docker.compose.service=db").Add("status", "running")
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			n, err := appsRunning(t, project, "db")
			if err != nil {
				t.Error(err)
				return
			}
			most.Store(max(most.Load(), int64(n)))
			list, err := testbed.Docker(t).ContainerList(context.Background(), client.ContainerListOptions{Filters: f})
			if err == nil {
				now := time.Now()
				mu.Lock()
				oldRuns := slices.ContainsFunc(list.Items, func(c container.Summary) bool { return c.ID == oldID })
				if !oldRuns && swapFrom.IsZero() {
					swapFrom = now
				}
				if !swapFrom.IsZero() && swapUntil.IsZero() && len(list.Items) == 1 && list.Items[0].ID != oldID && strings.Contains(list.Items[0].Status, "(healthy)") {
					swapUntil = now
				}
				mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	// The load: 3 clients, each a new connection and one INSERT, one after
	// the other with a short pause.
	var (
		next    atomic.Int64
		results []insert
		rmu     sync.Mutex
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := int(next.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
				r := insert{id: id, start: time.Now()}
				_, r.err = pg.query(ctx, fmt.Sprintf("INSERT INTO acked (id) VALUES (%d)", id))
				r.end = time.Now()
				cancel()
				rmu.Lock()
				results = append(results, r)
				rmu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	waitFor(t, "INSERTs under load before the rotation", func() bool { return next.Load() >= 30 })
	set := u.must("", tlsJSON(t, newCert, newKey), "dso", "secret", "set", "app/pg_tls")
	waitFor(t, "the rotation to finish", func() bool {
		// Neither look fails the test: the rotation may create its new
		// container between them.
		ok, _ := clean(t, project, project+"-db-1", project+"-db-dso-proxy-1")
		ids := serviceContainers(t, project, "db")
		return ok && len(ids) == 1 && ids[0] != oldID
	})
	// Some more load on the new server, then stop.
	after := next.Load()
	waitFor(t, "INSERTs after the rotation", func() bool { return next.Load() >= after+30 })
	close(stop)
	wg.Wait()
	close(stopWatch)
	<-watched

	if got, err := servedCert(addr); err != nil || !bytes.Equal(got, certDER(t, newCert)) {
		t.Errorf("after the rotation the server does not present the new certificate (%v)", err)
	}
	mu.Lock()
	from, until := swapFrom, swapUntil
	mu.Unlock()
	if from.IsZero() || until.IsZero() {
		t.Fatalf("the swap was not seen (old container stopped at %v, new one healthy at %v)", from, until)
	}
	var failed []string
	duringSwap, longest := 0, time.Duration(0)
	acked := map[int]bool{}
	for _, r := range results {
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("INSERT %d (started %v after the old server stopped): %v", r.id, r.start.Sub(from).Round(time.Millisecond), r.err))
			continue
		}
		acked[r.id] = true
		// Connected before the new server was ready and answered after
		// the old one stopped: it waited through the swap (the proxy holds
		// new connections from before the old server stops).
		if r.start.Before(until) && r.end.After(from) {
			duringSwap++
			longest = max(longest, r.end.Sub(r.start))
		}
	}
	t.Logf("%d INSERTs, %d failed; the swap (old server stopped to new one healthy) took %v; %d clients waited through it, the longest %v",
		len(results), len(failed), until.Sub(from).Round(time.Millisecond), duringSwap, longest.Round(time.Millisecond))
	for _, f := range failed[:min(5, len(failed))] {
		t.Errorf("a client failed: %s", f)
	}
	if duringSwap == 0 {
		t.Errorf("no client was connecting during the swap: the test shows nothing of the hold")
	}

	// Every acknowledged INSERT is there, in the database the new server
	// found on the volume.
	out, err := pg.query(t.Context(), "SELECT id FROM acked ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	present := map[int]bool{}
	for _, line := range strings.Fields(out) {
		n, _ := strconv.Atoi(line)
		present[n] = true
	}
	lost := 0
	for id := range acked {
		if !present[id] {
			lost++
		}
	}
	if lost > 0 || len(acked) == 0 {
		t.Errorf("%d of %d acknowledged INSERTs are missing after the rotation", lost, len(acked))
	}

	if most.Load() != 1 {
		t.Errorf("%d postgres servers ran at once, want 1 (stop-first; 0: the watch never saw one)", most.Load())
	}
	if ok, got := clean(t, project, project+"-db-1", project+"-db-dso-proxy-1"); !ok {
		t.Errorf("after the rotation the project holds %s, want one postgres container under its compose name and its proxy", got)
	}
	if users := strings.Fields(execOK(t, serviceContainer(t, project, "db"), "ps", "-o", "user=", "-C", "postgres")); len(users) == 0 {
		t.Errorf("no postgres process in %s-db-1", project)
	}
	st := u.must("", nil, "dso", "status", "--json")
	if !strings.Contains(st.stdout, `"order": "stop-first"`) {
		t.Errorf("the rotation is not journaled as stop-first:\n%s", st.stdout)
	}
	logs := u.must(dir, nil, "dso", "logs", "-p", project)
	assertNoLeak(t, u, [][]byte{password, oldKey, newKey, keyLine(oldKey), keyLine(newKey)}, up.output(), set.output(), logs.output(), agentLog(t, u))
}
