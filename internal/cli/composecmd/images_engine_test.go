package composecmd

import (
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dso-project/dso/internal/testbed"
)

// An imported image has no CMD: reading its users must still work.
func TestIDsOfImportedImage(t *testing.T) {
	image := testbed.ImportImage(t, "users", map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\npostgres:x:104:110::/var/lib/postgresql:/bin/bash\n",
		"/etc/group":  "root:x:0:\npostgres:x:110:\nssl-cert:x:109:postgres\n",
	})
	svc := types.ServiceConfig{Name: "db"}
	svc.Image = image
	e := engineImages{docker: testbed.Docker(t), project: &types.Project{Name: "p"}, ids: map[[2]string][2]int{}}
	for _, tt := range []struct {
		user     string
		uid, gid int
	}{
		{"postgres", 104, 110},
		{"postgres:ssl-cert", 104, 109},
	} {
		uid, gid, err := e.IDs(t.Context(), svc, tt.user)
		if err != nil || uid != tt.uid || gid != tt.gid {
			t.Errorf("IDs(%q) = %d, %d, %v; want %d, %d", tt.user, uid, gid, err, tt.uid, tt.gid)
		}
	}
	if _, _, err := e.IDs(t.Context(), svc, "nobody"); err == nil {
		t.Error("IDs(nobody) found a user the image does not have")
	}
}
