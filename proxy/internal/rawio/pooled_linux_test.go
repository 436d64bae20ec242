package rawio

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestReadPooledHoldsNoBufferWhileWaiting: ReadPooled hands its buffer back
// before it waits for bytes (an idle tunnel holds none), then reads into a
// fresh one and returns it with the bytes; the end of the stream is io.EOF.
func TestReadPooledHoldsNoBufferWhileWaiting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	r := New(server)
	var gets, puts atomic.Int32
	get := func() []byte { gets.Add(1); return make([]byte, 64) }
	put := func([]byte) { puts.Add(1) }
	type result struct {
		buf []byte
		n   int
		err error
	}
	read := func() <-chan result {
		ch := make(chan result, 1)
		go func() {
			b, n, err := r.ReadPooled(get, put)
			ch <- result{b, n, err}
		}()
		return ch
	}
	res := read()
	for deadline := time.Now().Add(5 * time.Second); puts.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("ReadPooled kept its buffer while waiting for bytes")
		}
	}
	if g, p := gets.Load(), puts.Load(); g != p {
		t.Fatalf("waiting with %d buffers taken and %d given back", g, p)
	}
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := <-res
	if got.err != nil || string(got.buf[:got.n]) != "hello" {
		t.Fatalf("read %q, %v", got.buf[:got.n], got.err)
	}
	if g, p := gets.Load(), puts.Load(); g != p+1 {
		t.Errorf("after the read %d buffers taken, %d given back; want the caller to hold one", g, p)
	}
	client.Close()
	if got := <-read(); !errors.Is(got.err, io.EOF) {
		t.Fatalf("at the end: %v, want io.EOF", got.err)
	}
}
