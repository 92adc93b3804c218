package state

import (
	"testing"
	"time"
)

func TestProjectsSurviveReopen(t *testing.T) {
	s, path := openTemp(t, Options{})
	if got, err := s.Projects(); err != nil || len(got) != 0 {
		t.Fatalf("a new store has projects: %v %v", got, err)
	}
	at := time.Unix(1_800_000_000, 0).UTC()
	for _, p := range []Project{{Name: "shop", Config: "/srv/shop/dso.yaml", UID: 1000, RegisteredAt: at}, {Name: "blog", UID: 0, RegisteredAt: at}, {Name: "shop", Config: "/srv/shop2/dso.yaml", UID: 1000, RegisteredAt: at}} {
		if err := s.PutProject(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutProject(Project{}); err == nil {
		t.Error("a project without a name was stored")
	}
	s.Close()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Projects()
	if err != nil || len(got) != 2 || got[0].Name != "blog" || got[1].Config != "/srv/shop2/dso.yaml" || !got[1].RegisteredAt.Equal(at) {
		t.Fatalf("after reopening: %+v %v", got, err)
	}
}

func TestRegisteredContainers(t *testing.T) {
	s, path := openTemp(t, Options{})
	if err := s.DeleteRegistered("none"); err != nil {
		t.Fatalf("deleting from a new store: %v", err)
	}
	for _, r := range []Registered{{ID: "c1", Project: "shop", UID: 1000, By: "caller"}, {ID: "c2", Project: "shop", By: "agent"}} {
		if err := s.PutRegistered(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRegistered(Registered{}); err == nil {
		t.Error("a registration without an ID was stored")
	}
	if err := s.DeleteRegistered("c1"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.RegisteredContainers()
	if err != nil || len(got) != 1 || got[0].ID != "c2" || got[0].By != "agent" {
		t.Fatalf("after reopening: %+v %v", got, err)
	}
}
