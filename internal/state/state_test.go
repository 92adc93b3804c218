package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const canary = "CANARY-state-7c1e9f"

func openTemp(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

func TestReopenKeepsEverything(t *testing.T) {
	s, path := openTemp(t, Options{})
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	fp := s.Fingerprint([]byte(canary))
	if _, found, err := s.RecordCheck("app/db", fp, t0); err != nil || found {
		t.Fatalf("first RecordCheck: found=%v err=%v", found, err)
	}
	if err := s.PutContainer(Container{ID: "c1", Service: "web", Secrets: map[string]string{"app/db": fp}}); err != nil {
		t.Fatal(err)
	}
	id, err := s.BeginRotation(Rotation{Service: "web", OldContainer: "c1", Strategy: "restart", Started: t0})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.Fingerprint([]byte(canary)); got != fp {
		t.Fatalf("fingerprint changed across reopen: %s vs %s", got, fp)
	}
	sec, found, err := s2.Secret("app/db")
	if err != nil || !found || sec.Version != fp || !sec.LastCheck.Equal(t0) {
		t.Fatalf("secret after reopen: %+v found=%v err=%v", sec, found, err)
	}
	c, found, err := s2.Container("c1")
	if err != nil || !found || c.Secrets["app/db"] != fp {
		t.Fatalf("container after reopen: %+v found=%v err=%v", c, found, err)
	}
	un, err := s2.Unfinished()
	if err != nil || len(un) != 1 || un[0].ID != id || un[0].Result != ResultRunning {
		t.Fatalf("unfinished after reopen: %+v err=%v", un, err)
	}
	if err := s2.FinishRotation(id, "c2", ResultSucceeded, "", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if un, _ := s2.Unfinished(); len(un) != 0 {
		t.Fatalf("finished rotation still unfinished: %+v", un)
	}
}

func TestFingerprintIsKeyedPerStore(t *testing.T) {
	a, _ := openTemp(t, Options{})
	defer a.Close()
	b, _ := openTemp(t, Options{})
	defer b.Close()
	if a.Fingerprint([]byte("pw")) == b.Fingerprint([]byte("pw")) {
		t.Fatal("two stores give the same fingerprint: the key is not per store")
	}
	if a.Fingerprint([]byte("pw")) == a.Fingerprint([]byte("pw2")) {
		t.Fatal("different values give the same fingerprint")
	}
}

func TestRecordCheckTracksChanges(t *testing.T) {
	s, _ := openTemp(t, Options{})
	defer s.Close()
	t0 := time.Unix(1000, 0).UTC()
	s.RecordCheck("k", "v1", t0)
	prev, found, _ := s.RecordCheck("k", "v1", t0.Add(time.Minute))
	if !found || prev.Version != "v1" {
		t.Fatalf("prev = %+v found=%v", prev, found)
	}
	cur, _, _ := s.Secret("k")
	if !cur.ChangedAt.Equal(t0) || !cur.LastCheck.Equal(t0.Add(time.Minute)) {
		t.Fatalf("unchanged check moved ChangedAt or missed LastCheck: %+v", cur)
	}
	s.RecordCheck("k", "v2", t0.Add(2*time.Minute))
	cur, _, _ = s.Secret("k")
	if cur.Version != "v2" || !cur.ChangedAt.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("change not recorded: %+v", cur)
	}
	if err := s.ForgetSecret("k"); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Secrets(); len(all) != 0 {
		t.Fatalf("forgotten secret still listed: %+v", all)
	}
}

func TestJournalIsBounded(t *testing.T) {
	s, _ := openTemp(t, Options{JournalSize: 5})
	defer s.Close()
	for i := range 12 {
		if _, err := s.BeginRotation(Rotation{Service: "svc", Strategy: "restart", Started: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s.Rotations(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 5 || rs[0].ID != 12 || rs[4].ID != 8 {
		t.Fatalf("journal = %d entries, first %d last %d; want 5 entries 12..8", len(rs), rs[0].ID, rs[len(rs)-1].ID)
	}
	if rs, _ := s.Rotations(2); len(rs) != 2 || rs[0].ID != 12 {
		t.Fatalf("Rotations(2) = %+v", rs)
	}
	if err := s.FinishRotation(1, "", ResultFailed, "x", time.Now()); err == nil {
		t.Fatal("finishing a dropped rotation succeeded")
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	s, path := openTemp(t, Options{})
	fp := s.Fingerprint([]byte(canary))
	s.RecordCheck("app/db", fp, time.Now())
	s.PutContainer(Container{ID: "c1", Secrets: map[string]string{"app/db": fp}})
	s.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(canary)) {
		t.Fatal("the canary value is in the state file")
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	s, path := openTemp(t, Options{})
	defer s.Close()
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestContainerWithoutIDIsRefused(t *testing.T) {
	s, _ := openTemp(t, Options{})
	defer s.Close()
	if err := s.PutContainer(Container{Service: "web"}); err == nil {
		t.Fatal("a container record without ID was stored")
	}
	s.PutContainer(Container{ID: "b"})
	s.PutContainer(Container{ID: "a"})
	cs, _ := s.Containers()
	if len(cs) != 2 || cs[0].ID != "a" {
		t.Fatalf("containers = %+v", cs)
	}
	s.DeleteContainer("a")
	if _, found, _ := s.Container("a"); found {
		t.Fatal("deleted container still there")
	}
}

func TestRecordChecksInOneTransaction(t *testing.T) {
	s, _ := openTemp(t, Options{})
	defer s.Close()
	t0 := time.Unix(5000, 0).UTC()
	s.RecordCheck("a", "1", t0)
	err := s.RecordChecks([]Check{{"a", "1", t0.Add(time.Minute)}, {"b", "9", t0.Add(time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := s.Secrets()
	if len(all) != 2 || !all[0].ChangedAt.Equal(t0) || !all[0].LastCheck.Equal(t0.Add(time.Minute)) || all[1].Version != "9" {
		t.Fatalf("secrets = %+v", all)
	}
}

// BenchmarkRecordCheck compares a sync per check with one per batch of 100.
func BenchmarkRecordCheck(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("each", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			s.RecordCheck(fmt.Sprintf("k%05d", i%10000), "v1", time.Now())
		}
	})
	b.Run("batch100", func(b *testing.B) {
		batch := make([]Check, 100)
		for i := 0; b.Loop(); i++ {
			for j := range batch {
				batch[j] = Check{Key: fmt.Sprintf("k%05d", (i*100+j)%10000), Version: "v1", At: time.Now()}
			}
			s.RecordChecks(batch)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/check")
	})
}
