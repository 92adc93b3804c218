// Command schemagen writes the JSON Schema of dso.yaml (config.JSONSchema)
// to the file named by its argument; `go generate ./internal/config` runs it.
package main

import (
	"fmt"
	"os"

	"github.com/dso-project/dso/internal/config"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: schemagen OUTPUT.json")
		os.Exit(2)
	}
	if err := os.WriteFile(os.Args[1], config.JSONSchema(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}
