package turn

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Media to a client over TCP or TLS (design decision 67). A browser relays over TCP when UDP
// does not get through, or when its UDP pair stops answering on a congested link (Chromium
// then moves to its TCP relay candidate). pion writes each frame for such a client into
// the stream, and a stream never drops: on a link narrower than the media, what the
// browser sent waited in the kernel's send buffer (autotuned up to megabytes) and arrived
// seconds late, all of it; a call's audio came 5-10 s behind, and kept coming late long
// after the sender had lowered its rate. Real-time media is better lost than late: the
// sender's bandwidth estimate sees loss and lowers the rate, the receiver conceals a gap.
//
// So the stream to a client keeps little in the kernel (TCP_NOTSENT_LOWAT: the socket takes
// no more once that much is unsent), and media frames (ChannelData, Data indications) wait
// in a queue of our own, written by one goroutine per connection, where a frame that has
// waited longer than streamMaxAge when its turn comes is dropped, and a frame that would
// take the queue over streamQueueBytes is not queued. Everything else (STUN responses and
// indications) goes in order through the same queue once it exists, and is never dropped:
// a connection whose queue would hold more than that ends. A connection that never carries
// media (a connection of RFC 6062's TCP relaying, raw after its ConnectionBind) writes as
// before, in the caller's goroutine.
const (
	streamMaxAge       = 250 * time.Millisecond
	streamQueueBytes   = 256 << 10
	streamNotSentLowat = 4 << 10
)

var errStreamBacklog = errors.New("turn: a client's stream is too far behind")

// isStreamMedia reports whether a frame for a client is media: ChannelData, or a Data
// indication (STUN message type 0x0017).
func isStreamMedia(b []byte) bool {
	return len(b) >= 2 && (b[0]>>6 == 1 || b[0] == 0 && b[1] == 0x17)
}

// limitUnsent sets TCP_NOTSENT_LOWAT on an accepted TCP or TLS connection (best effort: a
// kernel without it keeps its usual buffers).
func limitUnsent(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, streamNotSentLowat)
	})
}

type streamFrame struct {
	b     []byte
	at    time.Time
	media bool
}

// streamOut is a connection's queue of frames and the goroutine that writes them. The
// goroutine is the connection's: it ends when the connection is closed (close) or a write
// fails.
type streamOut struct {
	conn    net.Conn
	wmu     *sync.Mutex // the connection's writes, the queue's and the guard's own
	dropped func()      // counts a media frame dropped (metrics)
	wake    chan struct{}
	done    chan struct{}
	exited  chan struct{}

	mu     sync.Mutex
	q      []streamFrame
	bytes  int
	err    error
	closed bool
}

func newStreamOut(conn net.Conn, wmu *sync.Mutex, dropped func()) *streamOut {
	o := &streamOut{conn: conn, wmu: wmu, dropped: dropped, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go o.run() // ends with close or a failed write
	return o
}

// put queues a copy of a frame; media is dropped rather than queued beyond the budget.
func (o *streamOut) put(b []byte, media bool) error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return net.ErrClosed
	}
	if o.err != nil {
		err := o.err
		o.mu.Unlock()
		return err
	}
	if o.bytes+len(b) > streamQueueBytes {
		if media {
			o.mu.Unlock()
			o.dropped()
			return nil
		}
		o.err = errStreamBacklog
		o.mu.Unlock()
		o.conn.Close()
		return errStreamBacklog
	}
	o.q = append(o.q, streamFrame{b: append([]byte(nil), b...), at: time.Now(), media: media})
	o.bytes += len(b)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// next takes the oldest frame, waiting for one; false once the queue is closed.
func (o *streamOut) next() (streamFrame, bool) {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return streamFrame{}, false
		}
		if len(o.q) > 0 {
			f := o.q[0]
			o.q[0] = streamFrame{}
			o.q = o.q[1:]
			o.bytes -= len(f.b)
			o.mu.Unlock()
			return f, true
		}
		o.mu.Unlock()
		select {
		case <-o.wake:
		case <-o.done:
		}
	}
}

func (o *streamOut) run() {
	defer close(o.exited)
	for {
		f, ok := o.next()
		if !ok {
			return
		}
		if f.media && time.Since(f.at) > streamMaxAge {
			o.dropped()
			continue
		}
		o.wmu.Lock()
		_, err := o.conn.Write(f.b)
		o.wmu.Unlock()
		if err != nil {
			o.mu.Lock()
			o.err, o.q, o.bytes = err, nil, 0
			o.mu.Unlock()
			return
		}
	}
}

// close ends the goroutine (after the connection is closed, which ends a write it waits
// in) and waits for it.
func (o *streamOut) close() {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		close(o.done)
	}
	o.mu.Unlock()
	<-o.exited
}
