package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// compileSchema compiles JSONSchema() with a real JSON Schema validator.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSONSchema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yamlAsJSON reads a YAML file as the JSON value an editor would check.
func yamlAsJSON(t *testing.T, path string) any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSchemaAgreesWithLoader checks that editors and the loader agree:
// the files the loader accepts pass the schema, and those with unknown keys
// or wrong types fail it.
func TestSchemaAgreesWithLoader(t *testing.T) {
	s := compileSchema(t)
	valid, _ := filepath.Glob("testdata/valid/*.yaml")
	for _, f := range valid {
		if err := s.Validate(yamlAsJSON(t, f)); err != nil {
			t.Errorf("%s: loader accepts it, schema refuses it: %v", f, err)
		}
	}
	for _, f := range []string{"testdata/invalid/unknown-key-wrong-type.yaml", "testdata/invalid/types.yaml", "testdata/invalid/toplevel-list.yaml"} {
		if err := s.Validate(yamlAsJSON(t, f)); err == nil {
			t.Errorf("%s: loader refuses it, schema accepts it", f)
		}
	}
}
