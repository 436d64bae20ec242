// Package rawio is the proxy's socket I/O mechanics, kept apart from its HTTP
// logic: Conn reads and writes a TCP socket with raw non-blocking system
// calls under Go's netpoller (Linux only; New returns nil elsewhere), and
// Deadline is a lazy read or write deadline that moves the socket's timer
// only when it must. Listener is kelpie's own accept: each connection a
// Sock, a net.Conn whose Conn works on the socket itself and joins Go's
// netpoller only once it has to wait (sock_linux.go says why), and Parker
// holds idle connections on an epoll set of its own without a goroutine.
// The proxy package wraps Conns and Socks in its own connection types
// (clientConn for clients, upConn for backends), which keep the HTTP-aware
// parts: the head scan, truncation detection and per-request facts.
// proxy.Options.IO = "std" turns Conn and Listener off (the deadlines stay
// lazy): connections then are net's, read with net.Conn's Read and Write.
//
// # What the proxy relies on in fasthttp
//
// The wrappers sit between fasthttp and the socket, so they depend on how
// fasthttp drives a net.Conn. These are the assumptions, each pinned by a
// test in contract_test.go (the ninth in contract_idle_test.go, the tenth in
// sock_test.go) against the
// fasthttp in go.mod (CheckedFasthttp); the tests name the assumption when
// they fail.
//
//  1. HostClient: Response.LocalAddr is the LocalAddr of the connection the
//     request ran on, also after a failed request. hostTransport.Do
//     (proxy/transport.go) tags upConn's LocalAddr to learn, after a
//     failure, whether the connection was reused and whether any of the
//     request went out or any of the response came back.
//  2. HostClient: SetWriteDeadline is called once per request, before any
//     of the request is written, with the current time plus WriteTimeout.
//     upConn counts requests and resets their facts there, and takes the
//     deadline minus WriteTimeout as the request's start.
//  3. HostClient: SetReadDeadline is called once per request, after the
//     whole request is written and flushed and before the response's first
//     Read, with the current time plus ReadTimeout. upConn starts the
//     response timeout there, and holds the request's bytes back to send
//     them from that first Read (Conn.SendThenRead): a Read must follow the
//     Writes without fasthttp waiting on anything else.
//  4. Server: RequestCtx.Conn is the net.Conn the Listener's Accept
//     returned, unwrapped. proxy type-asserts it to *clientConn for the
//     truncation check (reqBody), the parse-error path and streamed
//     response bodies.
//  5. Server: an error returned by Read while a request head is read reaches
//     Server.ErrorHandler so that errors.Is finds it. clientConn returns
//     errBareLF that way, and parseError answers it with 400.
//  6. Server: RequestCtx.ConnRequestNum counts a connection's requests from
//     1, one per request, as the head scan does; clientConn.bodyErr matches
//     the two.
//  7. Both: one goroutine at a time reads a connection, and one at a time
//     writes it. Conn and Deadline keep per-direction state without locks.
//  8. Server: RequestCtx.IsTLS and TLSConnectionState recognise a TLS
//     connection by its Handshake and ConnectionState methods, not by its
//     type. proxy's TLS listener hands fasthttp a clientConn above TLS
//     (tlsClientConn, proxy/tls.go) that has those two methods.
//  9. Server: io.EOF from the Read that waits for a connection's next
//     request ends its serving without a response, with one Close; and
//     Server.ServeConn serves a socket anew, ConnRequestNum from 1.
//     proxy/idle.go parks an idle connection that way (clientConn.readIdle
//     returns io.EOF, its Close parks the socket) and serves it again with
//     ServeConn when it is readable; the head scan starts its count again
//     with the new clientConn (assumption 6).
//  10. Server: Serve ends for good on an Accept error that is not a
//     timeout, and quietly (io.EOF) on one whose text has "use of closed
//     network connection". Listener therefore retries running out of
//     descriptors or memory itself (AcceptSock), and reports its close
//     with net.ErrClosed, whose text that is.
//
// What the proxy does not rely on: how often fasthttp moves a deadline, or
// in which order (Deadline is correct for any sequence of calls), and how
// fasthttp's chunked reader treats a stream that ends (clientConn turns an
// end inside a request into io.ErrUnexpectedEOF, and the proxy asks
// clientConn.bodyErr at every end of a body).
package rawio

// CheckedFasthttp is the fasthttp version the assumptions above were last
// checked against; contract_test.go fails when go.mod names another, so an
// upgrade is a deliberate review of the list.
const CheckedFasthttp = "v1.77.0"
