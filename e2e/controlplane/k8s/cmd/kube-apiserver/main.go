// Command kube-apiserver is kvscale's e2e build of the upstream API server from the
// k8s.io/kubernetes module; it only wires the upstream cobra command to the process.
package main

import (
	"os"
	_ "time/tzdata" // zone data for CronJob time zones without a system tzdb

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
