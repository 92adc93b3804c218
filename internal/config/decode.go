package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/dso-project/dso/internal/secretref"
)

// pos is a 1-based line and column in the file.
type pos struct{ line, col int }

// meta is what the loader learnt about where each value came from. Paths
// look like "providers.vault.auth.params.token" and "secrets[0].name".
type meta struct {
	values  map[string]pos      // position of each value that was written
	keys    map[string]pos      // position of each mapping key that was written
	fromEnv map[string][]string // variables whose values went into a value
	bad     map[string]bool     // values refused by the decoder
}

func newMeta() *meta {
	return &meta{values: map[string]pos{}, keys: map[string]pos{}, fromEnv: map[string][]string{}, bad: map[string]bool{}}
}

// set reports whether the value at path was written in the file and
// accepted by the decoder.
func (m *meta) set(path string) bool {
	_, ok := m.values[path]
	return ok && !m.bad[path]
}

// at returns the position of the value at path, else of its nearest
// written ancestor, else the start of the file.
func (m *meta) at(path string) pos {
	for {
		if p, ok := m.values[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return pos{1, 1}
		}
		path = path[:i]
	}
}

// keyAt returns the position of the key of path, else that of its value.
func (m *meta) keyAt(path string) pos {
	if p, ok := m.keys[path]; ok {
		return p
	}
	return m.at(path)
}

// keyKind is a rule for the keys of a map field (tag keys:"KIND").
type keyKind struct {
	pattern *regexp.Regexp
	what    string
	example string
}

var keyKinds = map[string]keyKind{
	"envname": {regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`), "an environment variable name (letters, digits and _, not starting with a digit)", "DB_PASSWORD: prod/db/password"},
	"name":    {regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`), "a name of letters, digits, _, . and - (starting with a letter or digit)", "NAME: {type: ...}"},
}

// maxNodes bounds the work on one document, so that aliases cannot make a
// small file expand without end.
const maxNodes = 100000

// decoder walks a yaml.Node tree against a Go type.
type decoder struct {
	lookupEnv func(string) (string, bool)
	home      string
	probs     *problems
	meta      *meta
	nodes     int
	tooLarge  *Problem // set when the node budget ran out
}

// fieldTag holds the parsed struct tags of one field.
type fieldTag struct {
	name       string
	required   bool
	path       bool
	secret     bool
	secretKeys bool
	keys       string
}

func parseTag(f reflect.StructField) (fieldTag, bool) {
	y := f.Tag.Get("yaml")
	if y == "-" || !f.IsExported() {
		return fieldTag{}, false
	}
	name, _, _ := strings.Cut(y, ",")
	t := fieldTag{name: name, keys: f.Tag.Get("keys")}
	for _, o := range strings.Split(f.Tag.Get("dso"), ",") {
		switch o {
		case "required":
			t.required = true
		case "path":
			t.path = true
		case "secret":
			t.secret = true
		case "secretkeys":
			t.secretKeys = true
		}
	}
	return t, true
}

// enumerated is implemented by string types with a fixed set of values.
type enumerated interface{ Values() []string }

var (
	durationType = reflect.TypeOf(Duration(0))
	fileModeType = reflect.TypeOf(FileMode(0))
	cacheType    = reflect.TypeOf(Cache{})
	enumType     = reflect.TypeOf((*enumerated)(nil)).Elem()
)

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a string"
	}
	return "something else"
}

// expected names what a value of type t looks like in YAML; keys is the
// keys tag of a map field.
func expected(t reflect.Type, keys string) string {
	switch {
	case t == durationType:
		return `a duration such as "30s"`
	case t == fileModeType:
		return `an octal mode such as "0440"`
	case t == cacheType:
		return "true, false or a mapping"
	}
	switch t.Kind() {
	case reflect.Struct:
		return "a mapping"
	case reflect.Map:
		if k, ok := keyKinds[keys]; ok {
			return fmt.Sprintf("a mapping such as %q", k.example)
		}
		return "a mapping"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "a list of mappings (each item starting with -)"
		}
		return "a list of " + strings.TrimPrefix(expected(t.Elem(), ""), "a ") + "s"
	case reflect.Bool:
		return "true or false"
	case reflect.Int:
		return "a whole number"
	}
	return "a string"
}

// decode stores n into v, recording problems instead of stopping.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, tag fieldTag) {
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.tooLarge = &Problem{File: d.probs.file, Line: max(n.Line, 1), Column: max(n.Column, 1),
				Msg: fmt.Sprintf("document too large: more than %d values once aliases are expanded", maxNodes)}
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.probs.add(n.Line, n.Column, path, "alias to an unknown anchor")
			return
		}
		d.decode(n.Alias, v, path, tag)
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	d.meta.values[path] = pos{n.Line, n.Column}
	t := v.Type()
	switch {
	case t == cacheType && n.Kind == yaml.ScalarNode:
		// cache: true is short for cache: {enabled: true}.
		s, ok := d.scalar(n, path, t)
		if !ok {
			return
		}
		if s != "true" && s != "false" {
			d.fail(n, path, "expected %s, got %s", expected(t, ""), d.shown(path, s))
			return
		}
		v.FieldByName("Enabled").SetBool(s == "true")
		d.meta.values[join(path, "enabled")] = pos{n.Line, n.Column}
		return
	case t.Kind() == reflect.Pointer:
		// An optional value: set only when present and valid.
		elem := reflect.New(t.Elem())
		d.decode(n, elem.Elem(), path, tag)
		if !d.meta.bad[path] {
			v.Set(elem)
		}
		return
	case t == fileModeType:
		s, ok := d.scalar(n, path, t)
		if !ok {
			return
		}
		mode, err := secretref.ParseMode(strings.TrimSpace(s))
		if err != nil {
			d.fail(n, path, "expected an octal mode from \"0000\" to \"0777\", such as \"0440\", got %s", d.shown(path, s))
			return
		}
		v.Set(reflect.ValueOf(FileMode(mode)))
		return
	case t == durationType:
		s, ok := d.scalar(n, path, t)
		if !ok {
			return
		}
		dv, err := parseDuration(s)
		v.Set(reflect.ValueOf(dv))
		if err != nil {
			d.fail(n, path, "%s, got %s", err, d.shown(path, s))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path, tag)
	case reflect.Slice:
		d.decodeSlice(n, v, path, tag)
	case reflect.String:
		s, ok := d.scalar(n, path, t)
		if !ok {
			return
		}
		if t.Implements(enumType) {
			vals := reflect.Zero(t).Interface().(enumerated).Values()
			if !contains(vals, s) {
				d.fail(n, path, "unknown value %s%s; expected %s", d.shown(path, s), suggest(s, vals), oneOf(vals))
				return
			}
		}
		if tag.path {
			var err error
			if s, err = expandHome(s, d.home); err != nil {
				d.fail(n, path, "%s", err)
				return
			}
		}
		v.SetString(s)
	case reflect.Bool:
		s, ok := d.scalar(n, path, t)
		if !ok {
			return
		}
		switch s {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			d.fail(n, path, "expected true or false, got %s", d.shown(path, s))
		}
	case reflect.Int:
		s, ok := d.scalar(n, path, t)
		if !ok {
			return
		}
		i, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			d.fail(n, path, "expected a whole number, got %s", d.shown(path, s))
			return
		}
		v.SetInt(int64(i))
	default:
		panic(fmt.Sprintf("config: field type %s not handled", t))
	}
}

// fail records a problem with the value at path, which is then left unset.
func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.meta.bad[path] = true
	d.probs.add(n.Line, n.Column, path, format, args...)
}

// scalar returns the text of a scalar node with ${VAR} expanded.
func (d *decoder) scalar(n *yaml.Node, path string, t reflect.Type) (string, bool) {
	tag := fieldTag{}
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected %s, got %s", expected(t, tag.keys), describe(n))
		return "", false
	}
	s, used, err := expand(n.Value, d.lookupEnv)
	if err != nil {
		d.fail(n, path, "%s", err)
		return "", false
	}
	if len(used) > 0 {
		d.meta.fromEnv[path] = used
	}
	return s, true
}

// shown quotes a value for an error message, unless it came from the
// environment: then only the variable is named, since it may be a secret.
func (d *decoder) shown(path, s string) string {
	if vars := d.meta.fromEnv[path]; len(vars) > 0 {
		return "the value of ${" + strings.Join(vars, "}, ${") + "}"
	}
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return strconv.Quote(s)
}

// pairs checks that n is a mapping of plain keys without duplicates and
// returns its key and value nodes.
func (d *decoder) pairs(n *yaml.Node, path string, t reflect.Type, tag fieldTag) [][2]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected %s, got %s", expected(t, tag.keys), describe(n))
		return nil
	}
	seen := map[string]int{}
	var out [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.probs.add(k.Line, k.Column, path, "expected a plain key, got %s", describe(k))
			continue
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			d.probs.add(k.Line, k.Column, path, "merge keys (<<) are not supported in dso.yaml; write the keys out")
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.probs.add(k.Line, k.Column, path, "duplicate key %q (first at line %d)", k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, [2]*yaml.Node{k, val})
	}
	return out
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	tag := fieldTag{}
	t := v.Type()
	type field struct {
		index int
		tag   fieldTag
	}
	fields := map[string]field{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag, ok := parseTag(t.Field(i)); ok {
			fields[tag.name] = field{i, tag}
			names = append(names, tag.name)
		}
	}
	kv := d.pairs(n, path, t, tag)
	if n.Kind != yaml.MappingNode {
		return
	}
	got := map[string]bool{}
	for _, p := range kv {
		k, val := p[0], p[1]
		f, ok := fields[k.Value]
		if !ok {
			d.probs.add(k.Line, k.Column, path, "unknown key %q%s; expected one of %s", k.Value, suggest(k.Value, names), oneOf(names))
			continue
		}
		got[k.Value] = true
		fp := join(path, k.Value)
		d.meta.keys[fp] = pos{k.Line, k.Column}
		d.decode(val, v.Field(f.index), fp, f.tag)
		if isNull(val) && f.tag.required {
			d.probs.add(val.Line, val.Column, fp, "needs a value")
		}
	}
	for _, name := range names {
		if fields[name].tag.required && !got[name] {
			d.probs.add(n.Line, n.Column, path, "missing required key %q", name)
		}
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string, tag fieldTag) {
	t := v.Type()
	kv := d.pairs(n, path, t, tag)
	if n.Kind != yaml.MappingNode {
		return
	}
	m := reflect.MakeMapWithSize(t, len(kv))
	kind, hasKind := keyKinds[tag.keys]
	for _, p := range kv {
		k, val := p[0], p[1]
		fp := join(path, k.Value)
		d.meta.keys[fp] = pos{k.Line, k.Column}
		if hasKind && !kind.pattern.MatchString(k.Value) {
			d.probs.add(k.Line, k.Column, path, "key %q is not %s", k.Value, kind.what)
		}
		elem := reflect.New(t.Elem()).Elem()
		d.decode(val, elem, fp, fieldTag{})
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), elem)
	}
	v.Set(m)
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string, tag fieldTag) {
	t := v.Type()
	if n.Kind == yaml.MappingNode && len(n.Content) == 0 {
		v.Set(reflect.MakeSlice(t, 0, 0))
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "expected %s, got %s", expected(t, tag.keys), describe(n))
		return
	}
	s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), fieldTag{path: tag.path})
	}
	v.Set(s)
}

// expandHome replaces a leading ~ with home.
func expandHome(s, home string) (string, error) {
	if s != "~" && !strings.HasPrefix(s, "~/") {
		if strings.HasPrefix(s, "~") {
			return "", fmt.Errorf("%q: only ~ and ~/ are expanded (to $HOME); write the full path", s)
		}
		return s, nil
	}
	if home == "" {
		return "", fmt.Errorf("%q starts with ~ but $HOME is not set; write the full path", s)
	}
	return home + s[1:], nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
