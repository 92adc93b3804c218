// Package state is the agent's memory across restarts and crashes: for each
// watched secret the version and keyed fingerprint last seen and when it was
// checked, for each managed container the secret versions it holds, and a
// bounded journal of rotations. It is an embedded transactional store
// (bbolt); it never holds a secret's plaintext. Fingerprints are
// HMAC-SHA256 under a random key kept in the store, so a fingerprint of a
// short secret cannot be brute-forced without that key.
package state

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// DefaultPath is where the system agent keeps its state.
const DefaultPath = "/var/lib/dso/state.db"

// DefaultJournalSize is how many rotations the journal keeps by default.
const DefaultJournalSize = 1000

const schemaVersion = "1"

var (
	bucketMeta       = []byte("meta")
	bucketSecrets    = []byte("secrets")
	bucketContainers = []byte("containers")
	bucketJournal    = []byte("journal")

	keyHMAC   = []byte("fingerprint-key")
	keySchema = []byte("schema")
)

// ErrLocked means another process holds the state database open.
var ErrLocked = errors.New("state database is in use by another process")

// Options tune Open.
type Options struct {
	// JournalSize bounds the rotation journal (DefaultJournalSize when 0).
	JournalSize int
	// LockTimeout is how long Open waits for another process to let go of
	// the file (1s when 0).
	LockTimeout time.Duration
}

// Store is an open state database. It is safe for concurrent use.
type Store struct {
	db          *bolt.DB
	key         []byte
	journalSize int
}

// Open opens or creates the state database at path (file mode 0600, parent
// directories 0700 when they have to be created).
func Open(path string, opts Options) (*Store, error) {
	if opts.JournalSize <= 0 {
		opts.JournalSize = DefaultJournalSize
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		if errors.Is(err, bolterr.ErrTimeout) {
			return nil, fmt.Errorf("state database %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	s := &Store{db: db, journalSize: opts.JournalSize}
	if err := db.Update(s.init); err != nil {
		db.Close()
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketMeta, bucketSecrets, bucketContainers, bucketJournal} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	switch v := meta.Get(keySchema); {
	case v == nil:
		if err := meta.Put(keySchema, []byte(schemaVersion)); err != nil {
			return err
		}
	case string(v) != schemaVersion:
		return fmt.Errorf("schema version %q is not supported (want %q)", v, schemaVersion)
	}
	key := meta.Get(keyHMAC)
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		if err := meta.Put(keyHMAC, key); err != nil {
			return err
		}
	}
	s.key = append([]byte(nil), key...)
	return nil
}

// Close releases the database.
func (s *Store) Close() error { return s.db.Close() }

// Fingerprint returns a keyed hash of value (hex HMAC-SHA256 under the
// store's key): stable for this store, useless to anyone without the file.
func (s *Store) Fingerprint(value []byte) string {
	m := hmac.New(sha256.New, s.key)
	m.Write(value)
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))
}

// Secret is what the agent last saw of one watched secret.
type Secret struct {
	Key string `json:"key"`
	// Version is the backend's version id, or a Fingerprint when the
	// backend has no versions.
	Version   string    `json:"version"`
	LastCheck time.Time `json:"last_check"`
	// ChangedAt is when Version last changed.
	ChangedAt time.Time `json:"changed_at"`
}

// RecordCheck notes that key was checked at `at` and found at version. It
// returns the previous record (found=false the first time).
func (s *Store) RecordCheck(key, version string, at time.Time) (prev Secret, found bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSecrets)
		if raw := b.Get([]byte(key)); raw != nil {
			if err := json.Unmarshal(raw, &prev); err != nil {
				return fmt.Errorf("secret %q: %w", key, err)
			}
			found = true
		}
		cur := Secret{Key: key, Version: version, LastCheck: at, ChangedAt: prev.ChangedAt}
		if !found || prev.Version != version {
			cur.ChangedAt = at
		}
		return putJSON(b, []byte(key), cur)
	})
	return prev, found, err
}

// Check is one version check to record.
type Check struct {
	Key     string
	Version string
	At      time.Time
}

// RecordChecks records many checks in one transaction (one disk sync),
// for callers that gather checks rather than write each one: with
// thousands of watched secrets, a sync per check is the dominant cost.
func (s *Store) RecordChecks(checks []Check) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSecrets)
		for _, c := range checks {
			var prev Secret
			raw := b.Get([]byte(c.Key))
			if raw != nil {
				if err := json.Unmarshal(raw, &prev); err != nil {
					return fmt.Errorf("secret %q: %w", c.Key, err)
				}
			}
			cur := Secret{Key: c.Key, Version: c.Version, LastCheck: c.At, ChangedAt: prev.ChangedAt}
			if raw == nil || prev.Version != c.Version {
				cur.ChangedAt = c.At
			}
			if err := putJSON(b, []byte(c.Key), cur); err != nil {
				return err
			}
		}
		return nil
	})
}

// Secret returns the record of key.
func (s *Store) Secret(key string) (sec Secret, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketSecrets).Get([]byte(key))
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, &sec)
	})
	return sec, found, err
}

// Secrets returns every secret record, ordered by key.
func (s *Store) Secrets() ([]Secret, error) {
	var out []Secret
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSecrets).ForEach(func(k, v []byte) error {
			var sec Secret
			if err := json.Unmarshal(v, &sec); err != nil {
				return fmt.Errorf("secret %q: %w", k, err)
			}
			out = append(out, sec)
			return nil
		})
	})
	return out, err
}

// ForgetSecret drops the record of a secret no longer watched.
func (s *Store) ForgetSecret(key string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSecrets).Delete([]byte(key)) })
}

// Container records which secret versions a managed container holds.
type Container struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Project string `json:"project"`
	Service string `json:"service"`
	// Secrets maps a secret key to the version delivered into the container.
	Secrets   map[string]string `json:"secrets"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// PutContainer stores c, replacing any record with the same ID.
func (s *Store) PutContainer(c Container) error {
	if c.ID == "" {
		return errors.New("container record without an ID")
	}
	return s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketContainers), []byte(c.ID), c) })
}

// Container returns the record of container id.
func (s *Store) Container(id string) (c Container, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketContainers).Get([]byte(id))
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, &c)
	})
	return c, found, err
}

// Containers returns every container record, ordered by ID.
func (s *Store) Containers() ([]Container, error) {
	var out []Container
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			var c Container
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("container %q: %w", k, err)
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// DeleteContainer drops the record of a container that is gone.
func (s *Store) DeleteContainer(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketContainers).Delete([]byte(id)) })
}

// Rotation results: the words of the journal, which status shows. A
// finished rotation is journaled with the same words as its metrics and
// events (metrics.ResultSuccess, metrics.ResultFailure); ResultRemoved is
// one that ended because its container was removed meanwhile (docker
// compose down, docker rm): nothing was left to rotate.
const (
	ResultRunning   = "running"
	ResultSucceeded = "success"
	ResultFailed    = "failure"
	ResultRemoved   = "removed"
)

// Rotation is one journal entry. A rotation that replaces a container
// records, before each step, the step it is about to take (Step), so that
// an agent that died in the middle can finish or undo it (see
// internal/rotate).
type Rotation struct {
	ID           uint64    `json:"id"`
	Service      string    `json:"service"`
	Secrets      []string  `json:"secrets,omitempty"`
	OldContainer string    `json:"old_container"`
	NewContainer string    `json:"new_container,omitempty"`
	Strategy     string    `json:"strategy"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished,omitzero"`
	Result       string    `json:"result"`
	// Error is a message for people; callers must never put a value in it.
	Error string `json:"error,omitempty"`

	// Name is the compose name of the replica being replaced; TempName the
	// name the new container carries until it takes Name.
	Name     string `json:"name,omitempty"`
	TempName string `json:"temp_name,omitempty"`
	// Order is start-first or stop-first.
	Order string `json:"order,omitempty"`
	// Proxy is the proxy container that owns the service's host ports.
	Proxy string `json:"proxy,omitempty"`
	// Step is the step about to be taken or being taken.
	Step string `json:"step,omitempty"`
	// Recovery says what an agent that restarted did with this rotation.
	Recovery string `json:"recovery,omitempty"`
}

// BeginRotation journals r as running and returns its ID. The oldest
// entries are dropped beyond the journal size.
func (s *Store) BeginRotation(r Rotation) (uint64, error) {
	var id uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJournal)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		id = seq
		r.ID, r.Result, r.Finished = seq, ResultRunning, time.Time{}
		if err := putJSON(b, idKey(seq), r); err != nil {
			return err
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil && seq-binary.BigEndian.Uint64(k) >= uint64(s.journalSize); k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	return id, err
}

// FinishRotation records the outcome of rotation id.
func (s *Store) FinishRotation(id uint64, newContainer, result, errText string, at time.Time) error {
	return s.UpdateRotation(id, func(r *Rotation) {
		if newContainer != "" {
			r.NewContainer = newContainer
		}
		r.Result, r.Error, r.Finished = result, errText, at
	})
}

// UpdateRotation changes journal entry id in one transaction (one disk
// sync): fn gets the entry as stored and changes it in place.
func (s *Store) UpdateRotation(id uint64, fn func(*Rotation)) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJournal)
		raw := b.Get(idKey(id))
		if raw == nil {
			return fmt.Errorf("rotation %d is not in the journal", id)
		}
		var r Rotation
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("rotation %d: %w", id, err)
		}
		fn(&r)
		r.ID = id
		return putJSON(b, idKey(id), r)
	})
}

// Rotations returns up to limit journal entries, newest first (all when
// limit <= 0).
func (s *Store) Rotations(limit int) ([]Rotation, error) {
	var out []Rotation
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJournal).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var r Rotation
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rotation %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Unfinished returns the rotations still marked running, oldest first: after
// a crash, these are the ones to recover.
func (s *Store) Unfinished() ([]Rotation, error) {
	all, err := s.Rotations(0)
	if err != nil {
		return nil, err
	}
	var out []Rotation
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Result == ResultRunning {
			out = append(out, all[i])
		}
	}
	return out, nil
}

func idKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}
