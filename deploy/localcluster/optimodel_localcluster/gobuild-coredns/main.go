// CoreDNS for the local cluster, built from the Go module proxy with only the plugins its Corefile uses
// (components.py, coredns_corefile). CoreDNS documents this way of choosing plugins: a main package that
// imports coremain and the plugin packages it wants. Its own main package pulls in every plugin (cloud
// SDKs for route53, azure, clouddns, ...), which would add minutes to a cold build for nothing we use.
//
// A module of its own: CoreDNS depends on a newer client-go than the pinned Kubernetes release in gobuild/.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
