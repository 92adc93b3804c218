package secretcmd_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// transcript collects what a command writes to its terminal.
type transcript struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (t *transcript) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.Write(p)
}

func (t *transcript) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// onTerminal runs docker-dso on a pseudo-terminal (util-linux script) and
// types each answer once its prompt has appeared, so that input is typed
// while echo is off, as a person would. It returns the terminal transcript.
func (h *home) onTerminal(prompts, answers []string, args ...string) string {
	h.t.Helper()
	script, err := exec.LookPath("script")
	if err != nil {
		h.t.Fatalf("util-linux script is needed to test terminal prompts: %v", err)
	}
	c := exec.Command(script, "-qec", bin+" "+strings.Join(args, " "), "/dev/null")
	c.Env = append([]string{"HOME=" + h.dir, "PATH=" + os.Getenv("PATH")}, h.env...)
	out := &transcript{}
	c.Stdout, c.Stderr = out, out
	in, err := c.StdinPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		h.t.Fatal(err)
	}
	for i, p := range prompts {
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(out.String(), p) <= countIn(prompts[:i], p) {
			if time.Now().After(deadline) {
				c.Process.Kill()
				c.Wait()
				h.t.Fatalf("docker-dso %s: no prompt %q; terminal shows %q", strings.Join(args, " "), p, out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // let the program turn echo off
		io.WriteString(in, answers[i]+"\n")
	}
	err = c.Wait()
	in.Close()
	if err != nil {
		h.t.Fatalf("docker-dso %s on a terminal: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func countIn(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// TestTerminalPrompts types the passphrase and the value at hidden prompts:
// they work, and the terminal never shows what was typed.
func TestTerminalPrompts(t *testing.T) {
	h := newHome(t)
	const pass = "typed passphrase 123"
	screen := h.onTerminal([]string{"Passphrase for", "Repeat the passphrase"}, []string{pass, pass}, "init", "--passphrase")
	screen += h.onTerminal([]string{"Passphrase for", "Value for app/typed"}, []string{pass, canary}, "secret", "set", "app/typed")
	for _, s := range []string{pass, canary} {
		if strings.Contains(screen, s) {
			t.Fatalf("the terminal shows typed input %q:\n%s", s, screen)
		}
	}
	h.env = []string{"DSO_PASSPHRASE=" + pass}
	if got := h.ok(nil, "secret", "get", "app/typed").stdout; got != canary {
		t.Errorf("get = %q, want the typed value", got)
	}
}
