// Package rawudp reads and writes UDP sockets with raw, non-blocking system calls
// (recvmmsg, sendto, sendmmsg) inside Go's network poller: no allocation, and no entry
// into the scheduler's system-call state per datagram. The TURN relay's fast path (design
// decision 49) and the SFU's socket (decisions 50 to 52 and 56) use it. Linux only.
//
// Why raw: a goroutine entering a system call wakes the runtime's sysmon thread when it
// sleeps (the process was idle), which then polls every 20 us for a millisecond; on a
// server that idles between bursts of packets that is a thread wake-up and a context
// switch on the same CPU every 20 us (docs/benchmarks.md, "System calls and sysmon").
package rawudp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sys6 makes a system call without telling the scheduler (RawSyscall6): it is only used
// for calls that cannot block (recvmmsg with MSG_DONTWAIT, sendto and sendmmsg on a
// non-blocking socket), where entering and leaving the scheduler's syscall state costs more than the
// call itself at tens of thousands of packets a second.
func sys6(trap, a1, a2, a3, a4, a5, a6 uintptr) (uintptr, uintptr, syscall.Errno) {
	return unix.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
}

// BatchReader reads a UDP socket's datagrams several at a time: one recvmmsg(2) returns
// every datagram queued on the socket, up to len(bufs), where one recvfrom(2) per datagram
// would be needed otherwise. It waits in Go's network poller like any socket read, so
// deadlines and Close work as usual.
//
// Take, if set, is offered each datagram first, inside the poller's read call (the fast
// path); what it does not take, Read returns. Staying inside that call saves a system call
// per wake-up: after a short batch (fewer datagrams than buffers: the socket's queue was
// empty) the reader waits for the poller's next readiness event instead of reading until
// EAGAIN. That is safe only within one RawConn.Read call (a new one clears a pending
// event), and only after a short batch: a datagram queued later raises a new event (the
// poller is edge-triggered), and no event is pending for data already queued.
//
// One goroutine reads; it is not safe for concurrent use.
type BatchReader struct {
	raw   syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  [][]byte
	off   int // where a datagram starts in its buffer (room for a header written later)
	mtu   int
	n     int // datagrams in the batch
	next  int // the next one to look at
	err   error
	Take  func(b []byte, i int, from netip.AddrPort) bool
	fill  func(fd uintptr) bool // r.recv, made once (a method value allocates)
}

// NewBatchReader reads c in batches of up to size datagrams of up to mtu bytes each, placed
// at offset off of buffers that have 3 bytes to spare after mtu (ChannelData padding).
func NewBatchReader(c *net.UDPConn, size, mtu, off int) (*BatchReader, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &BatchReader{
		raw: raw, off: off, mtu: mtu,
		hdrs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size),
		bufs:  make([][]byte, size),
	}
	stride := off + mtu + 4
	mem := make([]byte, size*stride)
	for i := range size {
		r.bufs[i] = mem[i*stride : (i+1)*stride : (i+1)*stride]
		r.iovs[i].Base = &r.bufs[i][off]
		r.iovs[i].SetLen(mtu)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.fill = r.recv
	return r, nil
}

// Read returns the next datagram that Take did not take (a slice of Buf(i) from offset off,
// valid until the next call) with its index and sender, waiting for one.
func (r *BatchReader) Read() (b []byte, i int, from netip.AddrPort, err error) {
	for {
		for r.next < r.n {
			i := r.next
			r.next++
			b, from := r.datagram(i)
			if r.Take == nil || !r.Take(b, i, from) {
				return b, i, from, nil
			}
		}
		r.n, r.next, r.err = 0, 0, nil
		if err := r.raw.Read(r.fill); err != nil {
			return nil, 0, netip.AddrPort{}, err
		}
		if r.err != nil {
			return nil, 0, netip.AddrPort{}, r.err
		}
	}
}

func (r *BatchReader) datagram(i int) ([]byte, netip.AddrPort) {
	h := &r.hdrs[i]
	return r.bufs[i][r.off : r.off+int(h.Len)], sockaddrAddrPort(&r.names[i], h.Hdr.Namelen)
}

// Buf is the whole buffer of datagram i, header room included.
func (r *BatchReader) Buf(i int) []byte { return r.bufs[i] }

// recv is the RawConn read function: false asks the poller to wait for the socket to be
// readable, true returns from the read with r.next < r.n (a datagram for read to return)
// or r.err.
func (r *BatchReader) recv(fd uintptr) bool {
	for {
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			r.hdrs[i].Hdr.Flags = 0
		}
		n, _, errno := sys6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.err = &net.OpError{Op: "read", Net: "udp", Err: errno}
			return true
		}
		r.n, r.next = int(n), 0
		for r.next < r.n {
			i := r.next
			b, from := r.datagram(i)
			if r.Take == nil || !r.Take(b, i, from) {
				return true // for read to return
			}
			r.next++
		}
		r.n, r.next = 0, 0
		if int(n) < len(r.hdrs) {
			return false // the queue was empty: wait for the next readiness event
		}
	}
}

// sockaddrAddrPort decodes a sockaddr_in or sockaddr_in6 (an IPv4-mapped address stays
// mapped, as net.UDPConn.ReadFrom returns it).
func sockaddrAddrPort(sa *unix.RawSockaddrInet6, n uint32) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}
		}
		ip := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 { // link-local
			ip = ip.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(ip, ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port as the kernel stores it (network byte order) in a uint16 field.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return binary.BigEndian.Uint16(b[:])
}

func htons(p uint16) uint16 {
	var v uint16
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&v))[:], p)
	return v
}

// Socket is a UDP socket that Senders write to.
type Socket struct {
	conn *net.UDPConn
	raw  syscall.RawConn
	six  bool // AF_INET6 (maybe dual-stack)
}

// NewSocket prepares c for Senders (it notes whether c is an IPv6, maybe dual-stack,
// socket, which decides the form of the destination address).
func NewSocket(c *net.UDPConn) (*Socket, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	u := &Socket{conn: c, raw: raw}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		var d int
		d, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		u.six = d == unix.AF_INET6
	}); err != nil {
		return nil, err
	}
	return u, serr
}

// Sender sends datagrams with sendto(2) through RawConn.Write (which holds the socket open
// meanwhile), without allocating. One goroutine at a time uses a Sender (several Senders
// may write to one Socket).
type Sender struct {
	b     []byte
	sa    unix.RawSockaddrInet6 // or a RawSockaddrInet4 in its first bytes
	salen uintptr
	err   error
	fn    func(fd uintptr) bool
}

// NewSender makes a Sender.
func NewSender() *Sender {
	s := &Sender{}
	s.fn = s.sendto
	return s
}

// Send sends b to to on u. A full socket buffer drops the datagram (as a congested link
// would) rather than stalling the read loop that sends.
func (s *Sender) Send(u *Socket, b []byte, to netip.AddrPort) error {
	ip := to.Addr()
	if u.six {
		if ip.Zone() != "" {
			_, err := u.conn.WriteToUDPAddrPort(b, to)
			return err
		}
		sa := &s.sa
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(to.Port()), Addr: ip.As16()}
		s.salen = unix.SizeofSockaddrInet6
	} else {
		if !ip.Is4() && !ip.Is4In6() {
			return &net.AddrError{Err: "non-IPv4 address", Addr: ip.String()}
		}
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.sa))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(to.Port()), Addr: ip.As4()}
		s.salen = unix.SizeofSockaddrInet4
	}
	s.b, s.err = b, nil
	if err := u.raw.Write(s.fn); err != nil {
		return err
	}
	s.b = nil
	return s.err
}

func (s *Sender) sendto(fd uintptr) bool {
	for {
		_, _, errno := sys6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(s.b))), uintptr(len(s.b)), 0,
			uintptr(unsafe.Pointer(&s.sa)), s.salen)
		switch errno {
		case 0:
			return true
		case unix.EINTR:
			continue
		}
		s.err = &net.OpError{Op: "write", Net: "udp", Err: errno}
		return true
	}
}

// BatchSender sends several datagrams, each to its own address, with one sendmmsg(2): a
// fan-out's writes in one system call instead of one each. The datagrams' bytes must stay
// as they are until Flush. One goroutine at a time uses a BatchSender.
type BatchSender struct {
	hdrs   []unix.Mmsghdr
	iovs   []unix.Iovec
	names  []unix.RawSockaddrInet6
	n      int // datagrams added
	sent   int // of them, attempted by the current Flush
	failed int
	err    error
	fn     func(fd uintptr) bool // s.send, made once (a method value allocates)
}

// NewBatchSender makes a BatchSender of up to size datagrams a batch.
func NewBatchSender(size int) *BatchSender {
	s := &BatchSender{
		hdrs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size),
	}
	for i := range s.hdrs {
		s.hdrs[i].Hdr.Iov = &s.iovs[i]
		s.hdrs[i].Hdr.SetIovlen(1)
		s.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
	}
	s.fn = s.send
	return s
}

// Len is the number of datagrams added since the last Flush; Full says no more fit.
func (s *BatchSender) Len() int   { return s.n }
func (s *BatchSender) Full() bool { return s.n == len(s.hdrs) }

// Add adds b, to be sent to to from u. It returns false, adding nothing, when the batch is
// full or the address is one a batch cannot hold (an IPv6 address with a zone, or not
// IPv4 on an IPv4 socket): the caller sends that datagram by itself (Sender).
func (s *BatchSender) Add(u *Socket, b []byte, to netip.AddrPort) bool {
	if s.n == len(s.hdrs) || len(b) == 0 {
		return false
	}
	ip := to.Addr()
	h := &s.hdrs[s.n]
	if u.six {
		if ip.Zone() != "" {
			return false
		}
		s.names[s.n] = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(to.Port()), Addr: ip.As16()}
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
	} else {
		if !ip.Is4() && !ip.Is4In6() {
			return false
		}
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.names[s.n]))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(to.Port()), Addr: ip.As4()}
		h.Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	s.iovs[s.n].Base = unsafe.SliceData(b)
	s.iovs[s.n].SetLen(len(b))
	s.n++
	return true
}

// Flush sends the datagrams added, on u, and empties the batch. A datagram the kernel does
// not take (a full socket buffer: dropped, as a congested link would) is skipped and the
// rest still sent; failed counts those, err is the first such error.
func (s *BatchSender) Flush(u *Socket) (failed int, err error) {
	if s.n == 0 {
		return 0, nil
	}
	s.sent, s.failed, s.err = 0, 0, nil
	if werr := u.raw.Write(s.fn); werr != nil { // the socket is closed
		s.failed, s.err = s.n-s.sent, werr
	}
	for i := range s.n {
		s.iovs[i].Base = nil // the bytes were the caller's
	}
	s.n = 0
	return s.failed, s.err
}

func (s *BatchSender) send(fd uintptr) bool {
	for s.sent < s.n {
		r, _, errno := sys6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[s.sent])), uintptr(s.n-s.sent), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0 || r == 0:
			// sendmmsg fails only when its first datagram does (a later failure ends the
			// call early, and the next call reports it): that one is skipped.
			if s.err == nil {
				s.err = &net.OpError{Op: "write", Net: "udp", Err: errno}
			}
			s.failed++
			s.sent++
		default:
			s.sent += int(r)
		}
	}
	return true
}
