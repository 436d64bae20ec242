// Package testkit holds the helpers kelpie's tests share: a fasthttp
// backend on loopback that counts what it serves and can be killed like a
// crashed process, a raw TCP server for backends that misbehave below HTTP,
// a free-port picker, a concurrency-safe log buffer, Eventually for facts
// observed over real sockets, a load client that never retries on its own,
// and Chromium, ConsulBinary and ContainerEngine, which find what a test
// needs installed or report it Missing: a skip under -short, a failure
// otherwise.
//
// It is imported only from _test.go files (and from other test-helper
// packages such as discovery/consultest), never by product code. It does
// not import balancer, so every package's tests may use it.
//
// Every server it starts listens on 127.0.0.1 on a port the kernel picks
// (or, through ServeOn, on a Host's address: another network namespace
// whose link can drop packets), and is stopped when the test ends.
package testkit
