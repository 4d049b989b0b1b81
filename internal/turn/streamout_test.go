package turn

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/unix"
)

// A client over TCP whose link cannot take the media (here: it stops reading for 5 s, with
// a small receive buffer) is not sent media that would arrive late. Once it reads again,
// most of what its peer sent meanwhile is gone rather than delivered seconds late, and
// what follows arrives; while it reads, nothing is dropped; its requests are still
// answered (decision 67).
func TestStreamClientGetsNoStaleMedia(t *testing.T) {
	s := startServer(t, loopback)
	conn, c, peer, relay := bindTCP(t, s, "prt_slow", &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}})

	// The client reads every ChannelData frame and notes its sequence number; paused, it
	// stops reading (after the frame it may be waiting for).
	conn.SetReadDeadline(time.Time{}) // the requests' reads set one
	var paused atomic.Bool
	var mu sync.Mutex
	got := map[uint32]bool{}
	var stop sync.WaitGroup
	var stopping bool
	stop.Add(1)
	go func() { // ends at the read deadline set once stopping
		defer stop.Done()
		hdr := make([]byte, 4)
		for {
			for paused.Load() {
				time.Sleep(10 * time.Millisecond)
			}
			_, err := io.ReadFull(conn, hdr)
			var body []byte
			if err == nil {
				body = make([]byte, (int(binary.BigEndian.Uint16(hdr[2:]))+3)&^3)
				_, err = io.ReadFull(conn, body)
			}
			if err != nil {
				mu.Lock()
				s := stopping
				mu.Unlock()
				if !s || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("client read: %v", err)
				}
				return
			}
			if binary.BigEndian.Uint16(hdr) == 0x4001 && len(body) >= 4 {
				mu.Lock()
				got[binary.BigEndian.Uint32(body)] = true
				mu.Unlock()
			}
		}
	}()
	// The peer sends 60 frames a second of 200 bytes: sequence numbers from, to.
	send := func(from, to uint32) {
		b := make([]byte, 200)
		for i := from; i < to; i++ {
			binary.BigEndian.PutUint32(b, i)
			if _, err := peer.WriteTo(b, relay); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second / 60)
		}
	}
	count := func(from, to uint32) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for i := from; i < to; i++ {
			if got[i] {
				n++
			}
		}
		return n
	}
	waitFor := func(from, to uint32, want int) int {
		deadline := time.Now().Add(5 * time.Second)
		for count(from, to) < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		return count(from, to)
	}

	send(0, 60)
	if n := waitFor(0, 60, 60); n != 60 {
		t.Errorf("reading: %d of 60 frames arrived, want all", n)
	}
	paused.Store(true)
	send(60, 360)
	paused.Store(false)
	send(360, 420)
	late := waitFor(60, 360, 300)
	after := waitFor(360, 420, 60)
	t.Logf("of the 300 frames sent while the client did not read, %d arrived (%d dropped); after it, %d of 60", late, s.streamDrops.Load(), after)
	if late > 150 {
		t.Errorf("%d of the 300 frames sent while the client did not read arrived late, want at most 150", late)
	}
	if s.streamDrops.Load() == 0 {
		t.Error("no frame counted as dropped")
	}
	if after < 55 {
		t.Errorf("after the client read again, %d of 60 frames arrived", after)
	}

	mu.Lock()
	stopping = true
	mu.Unlock()
	conn.SetReadDeadline(time.Now())
	stop.Wait()
	conn.SetReadDeadline(time.Time{})
	if r := c.do(stun.MethodRefresh, lifetime(5*time.Minute)); errCode(r) != 0 {
		t.Fatalf("Refresh after the backlog: error %d", errCode(r))
	}
}
