package config

import (
	"reflect"
	"strconv"
	"strings"
)

// RedactedText is what `config show` prints in place of a secret.
const RedactedText = "<redacted>"

// secretWords mark a name (a params key, an environment variable) whose
// value must not be shown.
var secretWords = []string{"token", "secret", "password", "passwd", "passphrase", "key", "credential", "private", "pin"}

// LooksSecret reports whether a key or variable name suggests a secret value.
func LooksSecret(name string) bool {
	l := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// Redacted returns a copy of c fit to print: values of fields tagged
// dso:"secret", of params whose key looks secret, and of any value expanded
// from an environment variable whose name looks secret are replaced by
// "<redacted>".
func (c *Config) Redacted() *Config {
	m := c.meta
	if m == nil {
		m = newMeta()
	}
	out := redactCopy(reflect.ValueOf(c).Elem(), "", fieldTag{}, m)
	r := out.Addr().Interface().(*Config)
	r.File, r.meta = c.File, c.meta
	return r
}

func redactCopy(v reflect.Value, path string, tag fieldTag, m *meta) reflect.Value {
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			ft, ok := parseTag(t.Field(i))
			if !ok {
				continue
			}
			out.Field(i).Set(redactCopy(v.Field(i), join(path, ft.name), ft, m))
		}
	case reflect.Map:
		if v.IsNil() {
			return out
		}
		out.Set(reflect.MakeMapWithSize(v.Type(), v.Len()))
		iter := v.MapRange()
		for iter.Next() {
			k := iter.Key().String()
			elem := redactCopy(iter.Value(), join(path, k), fieldTag{secret: tag.secretKeys && LooksSecret(k)}, m)
			out.SetMapIndex(iter.Key(), elem)
		}
	case reflect.Slice:
		if v.IsNil() {
			return out
		}
		out.Set(reflect.MakeSlice(v.Type(), v.Len(), v.Len()))
		for i := 0; i < v.Len(); i++ {
			out.Index(i).Set(redactCopy(v.Index(i), path+"["+strconv.Itoa(i)+"]", fieldTag{}, m))
		}
	case reflect.String:
		out.Set(v)
		if v.Len() > 0 && (tag.secret || fromSecretVar(m.fromEnv[path])) {
			out.SetString(RedactedText)
		}
	default:
		out.Set(v)
	}
	return out
}

func fromSecretVar(vars []string) bool {
	for _, v := range vars {
		if LooksSecret(v) {
			return true
		}
	}
	return false
}
