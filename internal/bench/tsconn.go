package bench

import (
	"encoding/binary"
	"net"
	"sync"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	"golang.org/x/sys/unix"
)

// Socket receive times. A load client's time of reading a packet includes its own work
// (SRTP decryption, pion's interceptors, and waiting for the one CPU the load clients share
// when a fan-out delivers a burst of packets at once), which is not the server's. So every
// load client socket has SO_TIMESTAMPNS on, and the kernel's receive time of each RTP
// packet is kept by (SSRC, sequence number), which SRTP leaves in the clear; the track
// reader looks it up for the decrypted packet. Latency is reported both ways: to the
// socket (the headline) and to the reader.

// rxStamps holds recent kernel receive times of one client's RTP packets.
type rxStamps struct {
	mu    sync.Mutex
	rings map[uint32]*stampRing
	ports []int // the local ports of the client's sockets
}

func (r *rxStamps) addPort(p int) {
	r.mu.Lock()
	r.ports = append(r.ports, p)
	r.mu.Unlock()
}

func (r *rxStamps) localPorts() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.ports...)
}

// stampRing holds the receive times of the last 1024 sequence numbers of one SSRC.
type stampRing [1024]struct {
	seq uint16
	set bool
	at  int64
}

func newRxStamps() *rxStamps { return &rxStamps{rings: map[uint32]*stampRing{}} }

func (r *rxStamps) put(ssrc uint32, seq uint16, at int64) {
	r.mu.Lock()
	ring := r.rings[ssrc]
	if ring == nil {
		ring = &stampRing{}
		r.rings[ssrc] = ring
	}
	e := &ring[seq%1024]
	e.seq, e.set, e.at = seq, true, at
	r.mu.Unlock()
}

// peek returns a packet's receive time and keeps it (for take).
func (r *rxStamps) peek(ssrc uint32, seq uint16) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ring := r.rings[ssrc]
	if ring == nil {
		return 0, false
	}
	e := &ring[seq%1024]
	if !e.set || e.seq != seq {
		return 0, false
	}
	return e.at, true
}

func (r *rxStamps) take(ssrc uint32, seq uint16) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ring := r.rings[ssrc]
	if ring == nil {
		return 0, false
	}
	e := &ring[seq%1024]
	if !e.set || e.seq != seq {
		return 0, false
	}
	e.set = false
	return e.at, true
}

// stampNet is pion's network with receive timestamps on every UDP socket.
type stampNet struct {
	*stdnet.Net
	stamps *rxStamps
}

func newStampNet(s *rxStamps) (*stampNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return &stampNet{Net: n, stamps: s}, nil
}

func (n *stampNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	if err := enableTimestamps(c); err != nil {
		c.Close()
		return nil, err
	}
	n.stamps.addPort(c.LocalAddr().(*net.UDPAddr).Port)
	return &stampConn{UDPConn: c, stamps: n.stamps}, nil
}

// stampConn records the kernel receive time of every RTP packet read through ReadFrom,
// which is how pion's ICE reads a host candidate's socket.
type stampConn struct {
	*net.UDPConn
	stamps *rxStamps
	oob    [128]byte // one reader: ICE's receive loop
}

func (c *stampConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, oobn, _, addr, err := c.UDPConn.ReadMsgUDP(b, c.oob[:])
	if err != nil {
		return n, nil, err
	}
	if isRTP(b[:n]) {
		if at, ok := kernelTime(c.oob[:oobn]); ok {
			c.stamps.put(binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint16(b[2:]), at)
		}
	}
	return n, addr, nil
}

// isRTP tells RTP (or SRTP) from RTCP, STUN and DTLS (RFC 7983, RFC 5761).
func isRTP(b []byte) bool {
	return len(b) >= 12 && b[0]>>6 == 2 && !(b[1] >= 192 && b[1] <= 223)
}

func enableTimestamps(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	return serr
}

// kernelTime reads the SCM_TIMESTAMPNS receive time (Unix nanoseconds) from a control
// message.
func kernelTime(oob []byte) (int64, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		// struct timespec of a 64-bit Linux: seconds and nanoseconds, two native int64s.
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
			return sec*1e9 + nsec, true
		}
	}
	return 0, false
}
