package composecmd

import "testing"

func TestLookupIDs(t *testing.T) {
	passwd := []string{"root:x:0:0:root:/root:/bin/sh", "postgres:x:70:70::/var/lib/postgresql:/bin/sh", "app:x:1000:1001::/home/app:/bin/sh"}
	group := []string{"root:x:0:", "staff:x:50:", "app:x:1001:"}
	tests := []struct {
		user     string
		uid, gid int
		err      bool
	}{
		{"postgres", 70, 70, false},
		{"app", 1000, 1001, false},
		{"1000", 1000, 1001, false},    // a number takes its entry's group
		{"4242", 4242, 0, false},       // a number without an entry: group 0, as the engine does
		{"app:staff", 1000, 50, false}, // a named group
		{"app:7", 1000, 7, false},
		{"nobody", 0, 0, true},
		{"app:nogroup", 0, 0, true},
	}
	for _, tt := range tests {
		uid, gid, err := lookupIDs(tt.user, passwd, group)
		if (err != nil) != tt.err || !tt.err && (uid != tt.uid || gid != tt.gid) {
			t.Errorf("lookupIDs(%q) = %d, %d, %v; want %d, %d, error %v", tt.user, uid, gid, err, tt.uid, tt.gid, tt.err)
		}
	}
}

func TestSplit(t *testing.T) {
	inv, err := split([]string{"-f", "a.yml", "--file=b.yml", "-pshop", "--profile", "x", "-d", "--dry-run", "--build", "web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.project.Files) != 2 || inv.project.Name != "shop" || inv.project.Profiles[0] != "x" || !inv.dryRun {
		t.Errorf("project flags: %+v", inv)
	}
	if got := inv.rest; len(got) != 3 || got[0] != "-d" || got[1] != "--build" || got[2] != "web" {
		t.Errorf("passed on: %q", got)
	}
	if _, err := split([]string{"-f"}); err == nil {
		t.Error("-f without a value accepted")
	}
}
