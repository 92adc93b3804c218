package agent

import (
	"fmt"
	"maps"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/secretref"
)

// accessGrants tells whether a caller, by its user name and group names,
// is granted the secret at path by rules (dso.yaml agent.access). A prefix
// grants the path it names and what lies under it, segment by segment:
// "shop" and "shop/" grant shop/db, not shopping/db.
func accessGrants(rules []config.Access, userName string, groups []string, path string) bool {
	for _, r := range rules {
		if !slices.Contains(r.Users, userName) && !slices.ContainsFunc(r.Groups, func(g string) bool { return slices.Contains(groups, g) }) {
			continue
		}
		for _, p := range r.Secrets {
			p = strings.TrimSuffix(p, "/")
			if path == p || strings.HasPrefix(path, p+"/") {
				return true
			}
		}
	}
	return false
}

// checkAccess refuses references that rules do not grant the caller uid.
// Root and the agent's own user are granted everything, and so is
// everyone when there are no rules.
func (a *Agent) checkAccess(uid uint32, refs map[string]secretref.Ref) error {
	if len(a.opts.Access) == 0 || uid == 0 || uid == a.projects.uid {
		return nil
	}
	name, groups := strconv.FormatUint(uint64(uid), 10), []string(nil)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
		if gids, err := u.GroupIds(); err == nil {
			for _, gid := range gids {
				if g, err := user.LookupGroupId(gid); err == nil {
					groups = append(groups, g.Name)
				}
			}
		}
	}
	for _, v := range slices.Sorted(maps.Keys(refs)) {
		if !accessGrants(a.opts.Access, name, groups, refs[v].Path) {
			return fmt.Errorf("user %s may not use secret %s (variable %s): agent.access grants it no prefix of that path", name, refs[v].Path, v)
		}
	}
	return nil
}
