package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// waitFor polls cond until it holds or 60s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// answer asks the one running container of a service (through its proxy
// when it has one), without failing the test when it is not (yet) there or
// not answering.
func answer(t *testing.T, project, service, path string) (string, string, bool) {
	t.Helper()
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project).Add("label", "com.docker.compose.service="+service).Add("status", "running")
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{Filters: f})
	if err != nil || len(list.Items) != 1 {
		return "", "", false
	}
	addr := proxyAddr(t, project, service, 8080)
	if addr == "" {
		addr = servicePort(t, project, service)
	}
	got := tryGet(addr, path)
	return list.Items[0].ID, got, got != ""
}

func agentLog(t *testing.T, u *user) string {
	b, _ := os.ReadFile(filepath.Join(u.home, ".dso", "run", "agent.log"))
	return string(b)
}

// TestRotateRestart: a change in the local vault reaches the app through a
// new container (restart strategy), under the same name.
func TestRotateRestart(t *testing.T) {
	u := newUser(t)
	v1, v2 := canary(t, "v1"), canary(t, "v2")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    labels:
      dso.update.strategy: restart
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": v1})
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	oldID := serviceContainer(t, project, "api")
	oldName := inspect(t, oldID).Name
	waitFor(t, "the first value", func() bool { _, b, ok := answer(t, project, "api", "/env/TOKEN"); return ok && b == string(v1) })

	set := u.must("", v2, "dso", "secret", "set", "app/token")
	var newID string
	waitFor(t, "the new value after rotation", func() bool {
		id, b, ok := answer(t, project, "api", "/env/TOKEN")
		newID = id
		return ok && b == string(v2) && id != oldID
	})
	var status result
	waitFor(t, "the rotation to be journaled as a success", func() bool {
		status = u.must(dir, nil, "dso", "status", "--json")
		return strings.Contains(status.stdout, `"strategy": "restart"`) && strings.Contains(status.stdout, `"result": "success"`)
	})
	// The rotation ends with the old container removed and its name given
	// to the new one.
	waitFor(t, "the new container to take the old one's name "+oldName, func() bool { return inspect(t, newID).Name == oldName })
	if id := serviceContainer(t, project, "api"); id != newID {
		t.Errorf("the service's one container is %.12s, want the new one %.12s", id, newID)
	}
	assertNoLeak(t, u, [][]byte{v1, v2}, up.output(), set.output(), status.output(), agentLog(t, u))
}

// TestRotateSignal: the file is rewritten in the same container and the app
// gets SIGHUP.
func TestRotateSignal(t *testing.T) {
	u := newUser(t)
	v1, v2 := canary(t, "s1"), canary(t, "s2")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    labels:
      dso.update.strategy: signal
    environment:
      CERT_FILE: dsofile://app/cert
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/cert": v1})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	id := serviceContainer(t, project, "api")
	file := "/file?path=/run/dso/secrets/CERT_FILE"
	waitFor(t, "the first value", func() bool { _, b, ok := answer(t, project, "api", file); return ok && b == string(v1) })

	u.must("", v2, "dso", "secret", "set", "app/cert")
	waitFor(t, "the new file content", func() bool { _, b, ok := answer(t, project, "api", file); return ok && b == string(v2) })
	if got := serviceContainer(t, project, "api"); got != id {
		t.Errorf("signal rotation replaced the container")
	}
	waitFor(t, "SIGHUP reaching the app", func() bool { _, b, ok := answer(t, project, "api", "/hup"); return ok && strings.TrimSpace(b) != "0" })
	assertNoLeak(t, u, [][]byte{v1, v2}, agentLog(t, u))
}

// TestRotateFailureKeepsOldServing: the new container cannot start with the
// new value; the old one is back and serving, and the failure is reported.
func TestRotateFailureKeepsOldServing(t *testing.T) {
	u := newUser(t)
	good := canary(t, "good")
	image := testbed.BuildImage(t, "picky", map[string]string{}, "FROM "+testbed.BusyboxImage(t)+"\n"+
		`RUN printf '#!/bin/sh\ncase "$TOKEN" in reject*) echo refusing; exit 1;; esac\nmkdir -p /tmp/www && echo ok > /tmp/www/ok\nexec httpd -f -p 8080 -h /tmp/www\n' > /entry.sh && chmod +x /entry.sh`+"\n"+
		`ENTRYPOINT ["/entry.sh"]`+"\n")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  picky:
    image: ` + image + `
    ports: ["127.0.0.1::8080"]
    labels:
      dso.update.strategy: restart
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": good})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	oldID := serviceContainer(t, project, "picky")
	waitFor(t, "the app", func() bool { _, b, ok := answer(t, project, "picky", "/ok"); return ok && strings.TrimSpace(b) == "ok" })

	u.must("", []byte("reject-this"), "dso", "secret", "set", "app/token")
	waitFor(t, "the failed rotation in the status", func() bool {
		r := u.run(dir, nil, "dso", "status", "--json")
		return strings.Contains(r.stdout, `"result": "failure"`)
	})
	var id, b string
	var ok bool
	waitFor(t, "the old container serving", func() bool { id, b, ok = answer(t, project, "picky", "/ok"); return ok })
	if !ok || strings.TrimSpace(b) != "ok" || id != oldID {
		t.Errorf("after a failed rotation the old container is not serving (id %.12s, want %.12s, ok %v)", id, oldID, ok)
	}
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project, "com.docker.compose.service=picky")
	list, _ := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if len(list.Items) != 1 {
		t.Errorf("the service has %d containers after the failed rotation, want the old one only", len(list.Items))
	}
}

// TestAgentRestartRotatesNothing: an agent that restarts with nothing
// changed leaves the containers alone.
func TestAgentRestartRotatesNothing(t *testing.T) {
	u := newUser(t)
	v := canary(t, "stay")
	dir := writeProject(t, map[string]string{"compose.yaml": tokenCompose(t)})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": v})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	id := serviceContainer(t, project, "api")
	waitFor(t, "the value", func() bool { _, b, ok := answer(t, project, "api", "/env/TOKEN"); return ok && b == string(v) })
	u.must("", nil, "dso", "agent", "stop")
	restarted := time.Now()
	u.must(dir, nil, "dso", "up", "-p", project, "-d") // starts the agent again
	waitFor(t, "the new agent to check the secret", func() bool {
		s, _ := status(t, u)
		for _, sec := range s.Secrets {
			if !sec.LastCheck.After(restarted) {
				return false
			}
		}
		return len(s.Secrets) > 0
	})
	if got := serviceContainer(t, project, "api"); got != id {
		t.Errorf("the agent restart replaced the container")
	}
	r := u.must(dir, nil, "dso", "status", "--json")
	if strings.Contains(r.stdout, `"strategy": "restart"`) {
		t.Errorf("the agent restart rotated something:\n%s", r.stdout)
	}
	if _, b, ok := answer(t, project, "api", "/env/TOKEN"); !ok || b != string(v) {
		t.Errorf("the app lost its value")
	}
}
