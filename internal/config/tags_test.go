package config

import (
	"reflect"
	"strings"
	"testing"
)

func checkTags(t *testing.T, v any) {
	t.Helper()
	typ := reflect.TypeOf(v)
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		y, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		j, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if y != j {
			t.Errorf("%s.%s: yaml tag %q, json tag %q", typ.Name(), f.Name, y, j)
		}
		if y != "-" && f.Tag.Get("desc") == "" {
			t.Errorf("%s.%s: no desc tag", typ.Name(), f.Name)
		}
	}
}
