// Command docker-dso is the DSO Docker CLI plugin (`docker dso …`); it also
// runs standalone as `docker-dso …`.
package main

import (
	"os"

	"github.com/dso-project/dso/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
