// Package release tests scripts/package.sh: it builds the release files of
// this checkout (the .deb and .rpm packages and the archives for Linux and
// macOS) and checks them as a user installing them would: the package
// headers and file lists with dpkg-deb and rpm, the .deb unpacked with
// dpkg -x and its plugin run, each binary's platform, and SHA256SUMS.
package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/systemd"
	"github.com/dso-project/dso/internal/testbed"
)

const (
	pkgPlugin     = "/usr/libexec/docker/cli-plugins/docker-dso"
	archivePlugin = "/usr/local/lib/docker/cli-plugins/docker-dso"
)

var archs = []string{"amd64", "arm64"}

var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(\+git[0-9]+\.g[0-9a-f]+(\.dirty)?)?$`)

// rpmArch is the rpm name of a Go architecture.
var rpmArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

// packaged is what every package installs: path, then the mode dpkg-deb
// and rpm show for it ("l" alone: a symlink, whose permissions mean nothing).
var packaged = [][2]string{
	{"/usr/libexec/docker/cli-plugins/docker-dso", "-rwxr-xr-x"},
	{"/usr/libexec/docker/cli-plugins/dso-init", "-rwxr-xr-x"},
	{"/usr/bin/dso", "l"},
	{"/usr/lib/systemd/system/dso-agent.service", "-rw-r--r--"},
	{"/usr/share/bash-completion/completions/dso", "-rw-r--r--"},
	{"/usr/share/fish/vendor_completions.d/dso.fish", "-rw-r--r--"},
	{"/usr/share/doc/dso/LICENSE", "-rw-r--r--"},
	{"/usr/share/doc/dso/README.md", "-rw-r--r--"},
}

func TestReleaseFiles(t *testing.T) {
	root := testbed.RepoRoot()
	out := t.TempDir()
	pkg := exec.CommandContext(t.Context(), "bash", filepath.Join(root, "scripts", "package.sh"), out)
	pkg.Dir = root
	if b, err := pkg.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, b)
	}
	// The version is the one package.sh took from git (see dso_version in
	// scripts/lib.sh); every file and binary must then agree with it.
	found, err := filepath.Glob(filepath.Join(out, "dso_*_linux_amd64.tar.gz"))
	if err != nil || len(found) != 1 {
		t.Fatalf("want one dso_VERSION_linux_amd64.tar.gz in %s, found %v (%v)", out, found, err)
	}
	version := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(found[0]), "dso_"), "_linux_amd64.tar.gz")
	if !versionRE.MatchString(version) {
		t.Fatalf("version %q is not X.Y.Z or X.Y.Z+gitN.gHASH[.dirty]", version)
	}
	files := map[string]string{}
	for _, arch := range archs {
		files["deb "+arch] = fmt.Sprintf("dso_%s-1_%s.deb", version, arch)
		files["rpm "+arch] = fmt.Sprintf("dso-%s-1.%s.rpm", version, rpmArch[arch])
		files["linux "+arch] = fmt.Sprintf("dso_%s_linux_%s.tar.gz", version, arch)
		files["darwin "+arch] = fmt.Sprintf("dso_%s_darwin_%s.tar.gz", version, arch)
	}
	for _, what := range slices.Sorted(maps.Keys(files)) {
		st, err := os.Stat(filepath.Join(out, files[what]))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%-13s %s: %.1f MB", what, files[what], float64(st.Size())/1e6)
	}
	checkSums(t, out, files)

	for _, arch := range archs {
		t.Run("deb_"+arch, func(t *testing.T) { checkDeb(t, filepath.Join(out, files["deb "+arch]), version, arch) })
		t.Run("rpm_"+arch, func(t *testing.T) { checkRPM(t, filepath.Join(out, files["rpm "+arch]), version, arch) })
		for _, goos := range []string{"linux", "darwin"} {
			t.Run(goos+"_"+arch, func(t *testing.T) {
				checkArchive(t, filepath.Join(out, files[goos+" "+arch]), version, goos, arch)
			})
		}
	}
}

// checkDeb reads the package's fields and file list with dpkg-deb, unpacks
// it with dpkg -x and checks what it installs; on this machine's
// architecture it runs the plugin.
func checkDeb(t *testing.T, deb, version, arch string) {
	fields := run(t, "", "dpkg-deb", "--field", deb, "Package", "Version", "Architecture", "Recommends") + "\n"
	for _, want := range []string{"Package: dso", "Version: " + version + "-1", "Architecture: " + arch, "Recommends: docker.io | docker-ce-cli"} {
		if !strings.Contains(fields, want+"\n") {
			t.Errorf("dpkg-deb --field: no %q in\n%s", want, fields)
		}
	}
	// A line: -rwxr-xr-x root/root 12345 2026-01-01 00:00 ./usr/bin/x [-> target]
	modes := map[string]string{}
	for _, line := range strings.Split(run(t, "", "dpkg-deb", "--contents", deb), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			if f[1] != "root/root" {
				t.Errorf("dpkg-deb --contents: %s is owned by %s", f[5], f[1])
			}
			modes[strings.TrimPrefix(f[5], ".")] = f[0]
		}
	}
	for _, p := range append(packaged, [2]string{"/usr/share/zsh/vendor-completions/_dso", "-rw-r--r--"}) {
		if !sameMode(modes[p[0]], p[1]) {
			t.Errorf("dpkg-deb --contents: %s has mode %q, want %q", p[0], modes[p[0]], p[1])
		}
	}

	if got := run(t, "", "dpkg-deb", "--info", deb, "postinst"); got != postinstall(t) {
		t.Errorf("the .deb's postinst is not scripts/postinstall.sh:\n%s", got)
	}

	dir := t.TempDir()
	run(t, "", "dpkg", "-x", deb, dir)
	if target, err := os.Readlink(filepath.Join(dir, "usr/bin/dso")); err != nil || target != pkgPlugin {
		t.Errorf("/usr/bin/dso links to %q (%v), want %s", target, err, pkgPlugin)
	}
	plugin := filepath.Join(dir, pkgPlugin)
	checkELF(t, plugin, arch)
	checkELF(t, filepath.Join(dir, "usr/libexec/docker/cli-plugins/dso-init"), arch)
	checkFile(t, filepath.Join(dir, "usr/lib/systemd/system/dso-agent.service"), systemd.Unit(pkgPlugin))
	if arch != runtime.GOARCH {
		return
	}
	if got := run(t, "", plugin, "version"); !strings.HasPrefix(got, "dso version "+version+"\n") {
		t.Errorf("docker-dso version from the package printed\n%s\nwant dso version %s", got, version)
	}
	for shell, file := range map[string]string{
		"bash": "usr/share/bash-completion/completions/dso",
		"zsh":  "usr/share/zsh/vendor-completions/_dso",
		"fish": "usr/share/fish/vendor_completions.d/dso.fish",
	} {
		checkFile(t, filepath.Join(dir, file), run(t, "", plugin, "completion", shell)+"\n")
	}
	checkDockerFindsPlugin(t, filepath.Dir(plugin), version)
}

// checkDockerFindsPlugin runs `docker dso version` with the docker CLI
// looking for plugins in dir (the unpacked package's plugin directory, given
// as cliPluginsExtraDirs in a docker config of the test's own).
func checkDockerFindsPlugin(t *testing.T, dir, version string) {
	if _, err := exec.LookPath("docker"); err != nil {
		testbed.Unavailable(t, "the docker CLI is missing")
	}
	cfg := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), fmt.Appendf(nil, `{"cliPluginsExtraDirs": [%q]}`, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "docker", "dso", "version")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+cfg)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "dso version "+version+"\n") {
		t.Errorf("docker dso version, with the plugin from the package: %v\n%s", err, out)
	}
}

// checkRPM reads the package's header and file list with rpm.
func checkRPM(t *testing.T, rpm, version, arch string) {
	bin := os.Getenv("DSO_RPM_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("rpm"); err != nil {
			testbed.Unavailable(t, "the rpm command is missing (scripts/tools/rpm.sh installs it)")
		}
	}
	header := run(t, "", bin, "-qp", "--queryformat", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}", rpm)
	if want := fmt.Sprintf("dso %s 1 %s Apache-2.0", version, rpmArch[arch]); header != want {
		t.Errorf("rpm header: %q, want %q", header, want)
	}
	// A line of rpm -qlpv: -rwxr-xr-x 1 root root 123 Jan 1 00:00 /usr/bin/x [-> target]
	modes := map[string]string{}
	for _, line := range strings.Split(run(t, "", bin, "-qlpv", rpm), "\n") {
		if f := strings.Fields(line); len(f) >= 9 {
			modes[f[8]] = f[0]
		}
	}
	for _, p := range append(packaged, [2]string{"/usr/share/zsh/site-functions/_dso", "-rw-r--r--"}) {
		if !sameMode(modes[p[0]], p[1]) {
			t.Errorf("rpm -qlpv: %s has mode %q, want %q", p[0], modes[p[0]], p[1])
		}
	}
	if got := run(t, "", bin, "-qp", "--queryformat", "%{POSTIN}", rpm); got != postinstall(t) {
		t.Errorf("the .rpm's %%post is not scripts/postinstall.sh:\n%s", got)
	}
}

// postinstall is scripts/postinstall.sh, the packages' post-install script
// (it reloads systemd and restarts a running agent on the new binary), as
// run trims it.
func postinstall(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testbed.RepoRoot(), "scripts", "postinstall.sh"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// checkArchive reads a release archive: one folder holding the plugin for
// goos, a Linux dso-init, the completions, LICENSE, README.md and, for
// Linux, the unit.
func checkArchive(t *testing.T, archive, version, goos, arch string) {
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	top := fmt.Sprintf("dso_%s_%s_%s/", version, goos, arch)
	want := []string{"LICENSE", "README.md", "completions/_dso", "completions/dso.bash", "completions/dso.fish", "docker-dso", "dso-init"}
	if goos == "linux" {
		want = append(want, "dso-agent.service")
	}
	var got []string
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, top) {
			t.Errorf("%s is outside %s", h.Name, top)
			continue
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s is owned by %d:%d, want 0:0", h.Name, h.Uid, h.Gid)
		}
		name := strings.TrimPrefix(h.Name, top)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		got = append(got, name)
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch name {
		case "docker-dso", "dso-init":
			if h.Mode&0o111 == 0 {
				t.Errorf("%s has mode %o: not executable", name, h.Mode)
			}
			if name == "docker-dso" && goos == "darwin" {
				checkMachO(t, name, body, arch)
			} else {
				checkELFBytes(t, name, body, arch)
			}
		case "dso-agent.service":
			if string(body) != systemd.Unit(archivePlugin) {
				t.Errorf("the archive's unit differs from systemd.Unit(%q):\n%s", archivePlugin, body)
			}
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %v, want %v", filepath.Base(archive), got, want)
	}
}

// checkSums checks that SHA256SUMS lists every release file with its sum.
func checkSums(t *testing.T, dir string, files map[string]string) {
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		if sum, name, ok := strings.Cut(sc.Text(), "  "); ok {
			listed[name] = sum
		}
	}
	if len(listed) != len(files) {
		t.Errorf("SHA256SUMS lists %d files, want %d:\n%s", len(listed), len(files), sums)
	}
	for _, name := range files {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if listed[name] != hex.EncodeToString(sum[:]) {
			t.Errorf("SHA256SUMS: %s is listed as %q, its sum is %x", name, listed[name], sum)
		}
	}
}

// sameMode compares a listed mode with a wanted one, where "l" wants any
// symlink.
func sameMode(got, want string) bool {
	if want == "l" {
		return strings.HasPrefix(got, "l")
	}
	return got == want
}

var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func checkELF(t *testing.T, path, arch string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkELFBytes(t, filepath.Base(path), data, arch)
}

// checkELFBytes checks that a binary is a static Linux executable for arch
// (static: dso-init runs in any container, FROM scratch included).
func checkELFBytes(t *testing.T, name string, data []byte, arch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s is not an ELF binary: %v", name, err)
		return
	}
	if f.Machine != elfMachine[arch] || f.Type != elf.ET_EXEC {
		t.Errorf("%s: ELF %s %s, want an executable for %s", name, f.Machine, f.Type, elfMachine[arch])
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", name)
		}
	}
}

var machoCPU = map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}

func checkMachO(t *testing.T, name string, data []byte, arch string) {
	t.Helper()
	f, err := macho.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s is not a macOS binary: %v", name, err)
		return
	}
	if f.Cpu != machoCPU[arch] || f.Type != macho.TypeExec {
		t.Errorf("%s: Mach-O %s %s, want an executable for %s", name, f.Cpu, f.Type, machoCPU[arch])
	}
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	if string(got) != want {
		t.Errorf("%s differs from what it is made from:\n%s", path, got)
	}
}

// run runs a command and returns its standard output, trimmed of the last
// newline.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSuffix(string(out), "\n")
}
