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
