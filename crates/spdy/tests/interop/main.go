// A moby/spdystream client (what kubelet, kubectl and crictl use under
// k8s.io/apimachinery) against berth-spdy's echo_server example: several
// concurrent streams, big and small DATA frames, half-close, an empty
// stream, PING, GOAWAY. Run by tests/go_interop.rs; by hand:
// go run . 127.0.0.1:7000
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("OK")
}

func run(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	spdy, err := spdystream.NewConnection(conn, false)
	if err != nil {
		return err
	}
	go spdy.Serve(spdystream.NoOpStreamHandler)

	if _, err := spdy.Ping(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}

	sizes := []int{0, 1, 100_000, 3 << 20, 5<<20 + 123}
	errs := make(chan error, len(sizes))
	var wg sync.WaitGroup
	for i, size := range sizes {
		wg.Add(1)
		go func(i, size int) {
			defer wg.Done()
			if err := echo(spdy, i, size); err != nil {
				errs <- fmt.Errorf("stream %d (%d bytes): %w", i, size, err)
			}
		}(i, size)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return spdy.CloseWait()
}

func echo(spdy *spdystream.Connection, i, size int) error {
	headers := http.Header{}
	headers.Set("Name", fmt.Sprintf("s%d", i))
	headers.Set("StreamType", "stdout")
	headers.Add("Multi", "a")
	headers.Add("Multi", "b")
	stream, err := spdy.CreateStream(headers, nil, false)
	if err != nil {
		return err
	}
	if err := stream.WaitTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	sent := make([]byte, size)
	for j := range sent {
		sent[j] = byte(j*7 + i)
	}
	writeErr := make(chan error, 1)
	go func() {
		// One Write is one DATA frame: a 1 MiB frame, then small ones.
		rest := sent
		for n := 1 << 20; len(rest) > 0; n = 1000 + len(rest)%4000 {
			if n > len(rest) {
				n = len(rest)
			}
			if _, err := stream.Write(rest[:n]); err != nil {
				writeErr <- err
				return
			}
			rest = rest[n:]
		}
		writeErr <- stream.Close() // FIN: half-close
	}()
	got, err := io.ReadAll(stream)
	if err != nil {
		return err
	}
	if err := <-writeErr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	want := make([]byte, size)
	for j, b := range sent {
		want[j] = ^b
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo of %d bytes differs (got %d bytes)", size, len(got))
	}
	return nil
}
