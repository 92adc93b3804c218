package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketProjects = []byte("projects")

// Project records who registered a compose project with the agent, over
// its socket, and which dso.yaml its containers use. It holds a path,
// never the file's content or a value.
type Project struct {
	Name string `json:"name"`
	// Config is the dso.yaml the caller named ("" for the agent's own).
	Config string `json:"config,omitempty"`
	// UID is the registering caller's user, from the kernel (SO_PEERCRED).
	UID          uint32    `json:"uid"`
	RegisteredAt time.Time `json:"registered_at"`
}

// PutProject stores p, replacing any record of the same name.
func (s *Store) PutProject(p Project) error {
	if p.Name == "" {
		return errors.New("project record without a name")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketProjects)
		if err != nil {
			return err
		}
		return putJSON(b, []byte(p.Name), p)
	})
}

// Projects returns every project record, ordered by name.
func (s *Store) Projects() ([]Project, error) {
	var out []Project
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketProjects)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var p Project
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("project %q: %w", k, err)
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

var bucketRegistered = []byte("registered")

// Registered records a container the agent may serve: one a caller
// registered over the socket (By "caller"), or one the agent created
// itself, a rotation's replacement (By "agent"). A container that Docker
// restarts keeps its ID, and so its record.
type Registered struct {
	ID           string    `json:"id"`
	Project      string    `json:"project"`
	UID          uint32    `json:"uid"`
	By           string    `json:"by"`
	RegisteredAt time.Time `json:"registered_at"`
}

// PutRegistered stores r, replacing any record of the same ID.
func (s *Store) PutRegistered(r Registered) error {
	if r.ID == "" {
		return errors.New("registration without a container ID")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketRegistered)
		if err != nil {
			return err
		}
		return putJSON(b, []byte(r.ID), r)
	})
}

// RegisteredContainers returns every registration, ordered by ID.
func (s *Store) RegisteredContainers() ([]Registered, error) {
	var out []Registered
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRegistered)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r Registered
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("registration %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// DeleteRegistered drops the registration of a container that is gone.
func (s *Store) DeleteRegistered(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRegistered); b != nil {
			return b.Delete([]byte(id))
		}
		return nil
	})
}
