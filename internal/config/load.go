package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// MaxFileSize is the largest dso.yaml read.
const MaxFileSize = 1 << 20

// SearchPaths are the files tried in order when no path is given.
func SearchPaths() []string { return []string{"dso.yaml", "/etc/dso/dso.yaml"} }

// Loader finds and reads dso.yaml. Its fields are what the loading depends
// on besides the file, so that tests can set them.
type Loader struct {
	// LookupEnv gives the values of ${VAR}.
	LookupEnv func(string) (string, bool)
	// Home replaces a leading ~ in path fields ("" refuses ~).
	Home string
	// SearchPaths are tried in order when no path is given.
	SearchPaths []string
}

// System returns the Loader for this process: its environment, $HOME and
// the standard search paths.
func System() Loader {
	home, _ := os.UserHomeDir()
	return Loader{LookupEnv: os.LookupEnv, Home: home, SearchPaths: SearchPaths()}
}

// Load reads the configuration named by explicit (the -c/--config flag),
// else the first of ./dso.yaml and /etc/dso/dso.yaml that exists.
func Load(explicit string) (*Config, error) { return System().Load(explicit) }

// Find is Load for commands that also work without a dso.yaml: when
// explicit is "" and no search path exists, it returns a nil Config and no
// error. path is the absolute path of the file read.
func Find(explicit string) (cfg *Config, path string, err error) {
	l := System()
	path, err = l.Locate(explicit)
	if err != nil {
		var fe *fileError
		if explicit == "" && !errors.As(err, &fe) {
			return nil, "", nil
		}
		return nil, "", err
	}
	if cfg, err = l.Load(path); err != nil {
		return nil, "", err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", err
	}
	return cfg, abs, nil
}

// Locate returns the file Load would read.
func (l Loader) Locate(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", &fileError{explicit, err}
		}
		return explicit, nil
	}
	for _, p := range l.SearchPaths {
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", &fileError{p, err}
		}
	}
	return "", fmt.Errorf("%w: looked for %s; create one (docker dso setup) or pass -c/--config", ErrNoFile, strings.Join(l.SearchPaths, ", then "))
}

// fileError is a configuration file that cannot be read.
type fileError struct {
	path string
	err  error
}

func (e *fileError) Error() string {
	err := e.err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is said already
	}
	return fmt.Sprintf("config file %s: %v", e.path, err)
}

func (e *fileError) Unwrap() []error { return []error{ErrNoFile, e.err} }

// Load reads, checks and completes the configuration (see Locate).
func (l Loader) Load(explicit string) (*Config, error) {
	path, err := l.Locate(explicit)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &fileError{path, err}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &fileError{path, err}
	}
	if len(data) > MaxFileSize {
		ps := &problems{file: path}
		ps.add(1, 1, "", "file is larger than %d bytes", MaxFileSize)
		return nil, ps.err()
	}
	return l.Parse(path, data)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse checks data, read from file, and returns the configuration with
// defaults applied, or a *ValidationError listing every problem.
func (l Loader) Parse(file string, data []byte) (*Config, error) {
	ps := &problems{file: file}
	if p, msg, bad := badBytes(data); bad {
		ps.addAt(p, "", "%s", msg)
		return nil, ps.err()
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			ps.add(1, 1, "", "the file is empty; expected a mapping with version, mode, providers and secrets")
		} else {
			p, msg := yamlProblem(data, err)
			ps.addAt(p, "", "%s", msg)
		}
		return nil, ps.err()
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		ps.add(extra.Line, extra.Column, "", "more than one YAML document (---); dso.yaml holds one")
	} else if !errors.Is(err, io.EOF) {
		p, msg := yamlProblem(data, err)
		ps.addAt(p, "", "%s", msg)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	cfg := &Config{File: file, meta: newMeta()}
	d := &decoder{lookupEnv: l.lookup(), home: l.Home, probs: ps, meta: cfg.meta}
	if isNull(root) {
		ps.add(root.Line, root.Column, "", "the file holds no settings; expected a mapping with version, mode, providers and secrets")
	} else {
		d.decode(root, reflect.ValueOf(cfg).Elem(), "", fieldTag{})
	}
	if d.tooLarge != nil {
		return nil, &ValidationError{Problems: []Problem{*d.tooLarge}}
	}
	validate(cfg, ps)
	ps.scrub(secretValues(cfg.meta, d.lookupEnv))
	if err := ps.err(); err != nil {
		return nil, err
	}
	applyDefaults(cfg)
	return cfg, nil
}

// secretValues returns the values of the secret-looking variables the file
// expanded (as Redacted hides them): no problem may show them either.
func secretValues(m *meta, lookup func(string) (string, bool)) []string {
	var out []string
	for _, names := range m.fromEnv {
		for _, n := range names {
			if v, ok := lookup(n); ok && v != "" && LooksSecret(n) {
				out = append(out, v)
			}
		}
	}
	return out
}

func (l Loader) lookup() func(string) (string, bool) {
	if l.LookupEnv != nil {
		return l.LookupEnv
	}
	return func(string) (string, bool) { return "", false }
}

// yamlProblem places a syntax error of the YAML parser. The parser names the
// line where the enclosing block starts; the line that breaks the document
// is the first whose prefix of the file fails the same way, found by
// bisection.
func yamlProblem(data []byte, err error) (pos, string) {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return pos{1, 1}, "malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")
	}
	ctx, _ := strconv.Atoi(m[1])
	lines := bytes.SplitAfter(data, []byte("\n"))
	fails := func(k int) bool {
		var n yaml.Node
		e := yaml.Unmarshal(bytes.Join(lines[:k], nil), &n)
		return e != nil && e.Error() == err.Error()
	}
	lo, hi := max(ctx, 1), len(lines)
	if lo > hi || !fails(hi) {
		return pos{max(ctx, 1), 1}, "malformed YAML: " + m[2]
	}
	for lo < hi {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	line := lines[lo-1]
	col := len(line) - len(bytes.TrimLeft(line, " \t")) + 1
	msg := "malformed YAML: " + m[2]
	if lo != ctx {
		msg += fmt.Sprintf(" (in the block that starts at line %d)", ctx)
	}
	return pos{lo, col}, msg
}

// badBytes finds the first byte sequence YAML refuses (invalid UTF-8 or a
// control character), so that the error has a position.
func badBytes(data []byte) (pos, string, bool) {
	line, col := 1, 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return pos{line, col}, "invalid UTF-8; dso.yaml must be UTF-8 text", true
		case r == '\n':
			line, col = line+1, 0
		case r == '\t' || r == '\r' || r == 0xFEFF && i == 0:
		case r < 0x20 || r >= 0x7F && r <= 0x9F && r != 0x85 || r == 0xFFFE || r == 0xFFFF:
			return pos{line, col}, fmt.Sprintf("control character %U is not allowed", r), true
		}
		i += size
		col++
	}
	return pos{}, "", false
}
