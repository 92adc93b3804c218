package config

//go:generate go run ./schemagen ../../schema/dso.schema.json

import (
	"encoding/json"
	"reflect"
)

// SchemaID is the $id of the JSON Schema of dso.yaml.
const SchemaID = "https://github.com/dso-project/dso/raw/main/schema/dso.schema.json"

// JSONSchema describes dso.yaml as a JSON Schema (draft 2020-12) for
// editors, from the same types and tags the loader checks against. Checks
// across sections (a secret's provider exists, unique names) are only in the loader.
func JSONSchema() []byte {
	g := &schemaGen{defs: map[string]any{}}
	root := g.object(reflect.TypeOf(Config{}))
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["$id"] = SchemaID
	root["title"] = "dso.yaml"
	root["description"] = "Configuration of DSO, secrets for Docker Compose delivered at run time."
	root["$defs"] = g.defs
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		panic("config: JSON Schema does not marshal: " + err.Error())
	}
	return append(b, '\n')
}

type schemaGen struct {
	defs map[string]any
}

// interpolated lets a non-string value be written as ${VAR}.
var interpolated = map[string]any{"type": "string", "pattern": `\$\{`}

func (g *schemaGen) schema(t reflect.Type, tag fieldTag) map[string]any {
	switch {
	case t == durationType:
		return map[string]any{"type": "string", "pattern": `^(\$\{.*\}|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+|0)$`, "examples": []string{"30s", "5m"}}
	case t == fileModeType:
		return map[string]any{"anyOf": []any{map[string]any{"type": "string", "pattern": `^0?[0-7]{3}$`, "examples": []string{"0440"}}, interpolated}}
	case t.Kind() == reflect.Pointer:
		return g.schema(t.Elem(), tag)
	case t == cacheType:
		return map[string]any{"anyOf": []any{map[string]any{"type": "boolean"}, interpolated, g.ref(t)}}
	case t.Implements(enumType):
		return map[string]any{"type": "string", "enum": reflect.Zero(t).Interface().(enumerated).Values()}
	}
	switch t.Kind() {
	case reflect.Struct:
		return g.ref(t)
	case reflect.Map:
		s := map[string]any{"type": []string{"object", "null"}, "additionalProperties": g.schema(t.Elem(), fieldTag{})}
		if k, ok := keyKinds[tag.keys]; ok {
			s["propertyNames"] = map[string]any{"pattern": k.pattern.String()}
		}
		return s
	case reflect.Slice:
		return map[string]any{"anyOf": []any{
			map[string]any{"type": "array", "items": g.schema(t.Elem(), fieldTag{})},
			map[string]any{"type": "object", "maxProperties": 0},
			map[string]any{"type": "null"},
		}}
	case reflect.Bool:
		return map[string]any{"anyOf": []any{map[string]any{"type": "boolean"}, interpolated}}
	case reflect.Int:
		return map[string]any{"anyOf": []any{map[string]any{"type": "integer"}, interpolated}}
	}
	return map[string]any{"type": "string"}
}

// ref is a reference to the definition of struct t, made on first use.
func (g *schemaGen) ref(t reflect.Type) map[string]any {
	name := t.Name()
	if _, done := g.defs[name]; !done {
		g.defs[name] = nil // guards against recursion
		def := g.object(t)
		def["type"] = []string{"object", "null"} // an empty "agent:" is null in YAML
		g.defs[name] = def
	}
	return map[string]any{"$ref": "#/$defs/" + name}
}

func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := parseTag(f)
		if !ok {
			continue
		}
		s := g.schema(f.Type, tag)
		if d := f.Tag.Get("desc"); d != "" {
			if _, isRef := s["$ref"]; isRef {
				s = map[string]any{"allOf": []any{s}}
			}
			s["description"] = d
		}
		props[tag.name] = s
		if tag.required {
			required = append(required, tag.name)
		}
	}
	o := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}
