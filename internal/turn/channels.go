package turn

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/bedside/bedside/internal/rawudp"
)

// The ChannelData fast path. Nearly every relayed packet of a call is ChannelData between
// a UDP client and a peer it bound a channel to. pion handles each one with a lookup of the
// allocation by 5-tuple, of the channel under a lock, a few allocations and debug-log calls
// whose arguments are built even when logging is off; that was most of the CPU the relay
// spent above coturn's per message. So the relay keeps its own table of the channels pion
// has bound, fed by pion's events, and relays those packets itself, in both directions:
//
//   - client -> peer: the listener's read loop (guardedPacketConn) sends the data of a
//     ChannelData message from a known client on a known channel out of that allocation's
//     relay socket to the channel's peer;
//   - peer -> client: the relay socket's read loop (relayConn.ReadFrom, run by pion) wraps a
//     datagram from a channel's peer into ChannelData and sends it to the client.
//
// Everything else goes to pion as before: STUN messages (after the guard), Send and Data
// indications, ChannelData that the table does not know. The table only ever holds
// channels pion created (after authentication, the guard and the peer policy), of the UDP
// client pion reported with the allocation (OnAllocationCreated), and loses them when pion
// deletes them (OnChannelDeleted: expiry, refresh to 0, the allocation closing) or the
// relay socket closes (revocation, Close), so the fast path relays no more than pion
// would. Relayed packets pass the same bandwidth limiter and packet counter. Allocations
// of TCP and TLS clients stay with pion. The table is read without a lock (atomic
// pointers to lists and maps that are copied on write under s.mu): events are rare,
// packets are not.

// boundChannel is a channel of an allocation: its number and its peer.
type boundChannel struct {
	number uint16
	peer   netip.AddrPort // unmapped
}

// unmap normalizes an address the way pion compares them (net.IP.Equal): an IPv4-mapped
// IPv6 address is its IPv4 address.
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func udpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := u.AddrPort()
	return unmap(ap), ap.IsValid()
}

// relayOf is the UDP relay socket at relay (a relayed address pion reported) if it
// belongs to user. s.mu is held.
func (s *Server) relayOf(relay net.Addr, user string) *relayConn {
	r, ok := relay.(*net.UDPAddr)
	if !ok {
		return nil // a TCP allocation
	}
	rc := s.byPort[r.Port]
	if rc == nil || rc.fast == nil || rc.user != user || rc.dead.Load() {
		return nil
	}
	return rc
}

// clientRelayOf is relayOf for an event from a client (src): the relay socket, if the
// fast path knows src as its client. s.mu is held.
func (s *Server) clientRelayOf(src, relay net.Addr, user string) *relayConn {
	client, ok := udpAddrPort(src)
	if !ok {
		return nil
	}
	rc := s.relayOf(relay, user)
	if rc == nil || rc.client != client {
		return nil
	}
	return rc
}

// allocationCreated is (part of) pion's OnAllocationCreated: the fast path learns which
// client a UDP relay socket belongs to. Until then, and for TCP and TLS clients, it knows
// no channel of the allocation and pion relays everything.
func (s *Server) allocationCreated(src, relay net.Addr, user string) {
	client, ok := udpAddrPort(src)
	if !ok {
		return // a TCP or TLS client: pion relays
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.relayOf(relay, user)
	if rc == nil || rc.client.IsValid() {
		return
	}
	rc.client = client
	rc.clientConn = s.clientSocket(client)
}

// channelCreated is pion's OnChannelCreated: the fast path learns the channel, if it is of
// an allocation whose client it knows (the same client, the same participant: a channel
// event that arrives late, after its relay port went to another allocation, is ignored).
func (s *Server) channelCreated(src, relay, peer net.Addr, user string, number uint16) {
	to, ok := udpAddrPort(peer)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.clientRelayOf(src, relay, user)
	if rc == nil {
		return
	}
	var list []boundChannel
	if old := rc.chans.Load(); old != nil {
		for _, ch := range *old {
			if ch.number != number && ch.peer != to { // cannot happen: pion refuses a rebind
				list = append(list, ch)
			}
		}
	}
	list = append(list, boundChannel{number: number, peer: to})
	rc.chans.Store(&list)
	if cur := s.clients.Load(); cur == nil || (*cur)[rc.client] != rc {
		s.editClients(func(m map[netip.AddrPort]*relayConn) { m[rc.client] = rc })
	}
}

// channelDeleted is pion's OnChannelDeleted (expiry, or the allocation closing).
func (s *Server) channelDeleted(src, relay net.Addr, user string, number uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.clientRelayOf(src, relay, user)
	if rc == nil {
		return
	}
	old := rc.chans.Load()
	if old == nil {
		return
	}
	list := make([]boundChannel, 0, len(*old))
	for _, ch := range *old {
		if ch.number != number {
			list = append(list, ch)
		}
	}
	rc.chans.Store(&list)
}

// forgetRelay drops a closing relay socket from the fast path. s.mu is held.
func (s *Server) forgetRelay(rc *relayConn) {
	if rc.fast == nil {
		return
	}
	if s.byPort[rc.fast.port] == rc {
		delete(s.byPort, rc.fast.port)
	}
	rc.chans.Store(nil)
	if cur := s.clients.Load(); cur != nil && (*cur)[rc.client] == rc {
		s.editClients(func(m map[netip.AddrPort]*relayConn) {
			for k, v := range m {
				if v == rc {
					delete(m, k)
				}
			}
		})
	}
}

// editClients replaces the clients map with an edited copy: readers load it without a
// lock, so it is never changed in place. s.mu is held.
func (s *Server) editClients(edit func(map[netip.AddrPort]*relayConn)) {
	m := map[netip.AddrPort]*relayConn{}
	if cur := s.clients.Load(); cur != nil {
		m = make(map[netip.AddrPort]*relayConn, len(*cur)+1)
		for k, v := range *cur {
			m[k] = v
		}
	}
	edit(m)
	s.clients.Store(&m)
}

// clientSocket is the listener socket the fast path sends a client's packets on. All of
// them share the address and port the client talks to, so any would do; spreading clients
// over them keeps concurrent senders off one socket's write lock.
func (s *Server) clientSocket(client netip.AddrPort) *rawudp.Socket {
	if len(s.udpConns) == 0 {
		return nil
	}
	return s.udpConns[int(client.Port())%len(s.udpConns)]
}

// forward relays ChannelData b from a UDP client if the fast path knows its channel, and
// reports whether it did; otherwise pion handles b.
func (s *Server) forward(b []byte, from netip.AddrPort, snd *rawudp.Sender) bool {
	cur := s.clients.Load()
	if cur == nil || len(b) < 4 {
		return false
	}
	rc := (*cur)[unmap(from)]
	if rc == nil {
		return false
	}
	chans := rc.chans.Load()
	if chans == nil {
		return false
	}
	number := binary.BigEndian.Uint16(b[0:2])
	length := int(binary.BigEndian.Uint16(b[2:4]))
	if length > len(b)-4 {
		return false // pion refuses it
	}
	for _, ch := range *chans {
		if ch.number == number {
			rc.toPeer(b[4:4+length], ch.peer, snd)
			return true
		}
	}
	return false
}

// toClient relays datagram i of the relay socket's batch, b, from peer to the client if a
// channel is bound to that peer: it writes the ChannelData header into the room left in
// front of b and pads it to 4 bytes, as pion does.
func (c *relayConn) toClient(b []byte, i int, from netip.AddrPort) bool {
	chans := c.chans.Load()
	if chans == nil {
		return false
	}
	peer := unmap(from)
	for _, ch := range *chans {
		if ch.peer != peer {
			continue
		}
		buf := c.fast.rd.Buf(i)
		n := len(b)
		binary.BigEndian.PutUint16(buf[0:2], ch.number)
		binary.BigEndian.PutUint16(buf[2:4], uint16(n))
		end := 4 + n
		padded := (end + 3) &^ 3
		clear(buf[end:padded])
		c.fast.snd.Send(c.clientConn, buf[:padded], c.client)
		return true
	}
	return false
}
