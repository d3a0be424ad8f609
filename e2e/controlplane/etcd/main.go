// Command etcd is kvscale's e2e build of the etcd server. The upstream server module carries
// replace directives, so `go install` refuses it; a wrapper main module that calls etcdmain
// builds the same server from the published module versions.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
