// Command kubectl is kvscale's e2e build of the upstream CLI, version-matched to the server.
// kwokctl's binary runtime needs a kubectl (its readiness probe runs `kubectl get --raw
// /version`) and would otherwise download one; this keeps the cluster self-contained.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
