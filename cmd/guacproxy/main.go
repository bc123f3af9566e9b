// Command guacproxy is a sidecar in front of Apache Guacamole that lets
// internal tools without Guacamole credentials use its REST API: it logs in
// as the calling tool's service identity, caches the token and injects it.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
