package turn

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// Tests of the ChannelData fast path (channels.go), with a hand-made TURN client over real
// loopback sockets. fastChannels shows whether the fast path (rather than pion) knows a
// client's channels; the tests check what a peer and a client receive either way.

// fastChannels is the fast path's channel table for the UDP client at addr (nil: none).
func (s *Server) fastChannels(addr net.Addr) []boundChannel {
	client, ok := udpAddrPort(addr)
	if !ok {
		return nil
	}
	cur := s.clients.Load()
	if cur == nil || (*cur)[client] == nil {
		return nil
	}
	if l := (*cur)[client].chans.Load(); l != nil {
		return *l
	}
	return nil
}

func newPeer(t *testing.T) (net.PacketConn, *net.UDPAddr) {
	t.Helper()
	p, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, p.LocalAddr().(*net.UDPAddr)
}

// recvFrom returns the next datagram on pc within timeout, or nil.
func recvFrom(pc net.PacketConn, timeout time.Duration) ([]byte, net.Addr) {
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return nil, nil
	}
	return buf[:n], from
}

// bindTCP makes a client over TCP (dialled with d) with an allocation and channel 0x4001
// to a new peer.
func bindTCP(t *testing.T, s *Server, user string, d *net.Dialer) (net.Conn, *rawClient, net.PacketConn, *net.UDPAddr) {
	t.Helper()
	peer, pa := newPeer(t)
	cred := s.Issue(user, 10*time.Minute)
	conn, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(s.TCPPort())))
	if err != nil {
		t.Fatal(err)
	}
	c := newStreamClient(t, conn, cred.Username, cred.Password)
	relay := c.allocate()
	if r := c.do(stun.MethodChannelBind, channelNumber(0x4001), peerAddr{pa.IP.To4(), pa.Port}); errCode(r) != 0 {
		t.Fatalf("ChannelBind: %d", errCode(r))
	}
	return conn, c, peer, relay
}

// bind makes a UDP client with an allocation and a channel to peer.
func bind(t *testing.T, s *Server, user string, number uint16, peer *net.UDPAddr) (*rawClient, *net.UDPAddr) {
	t.Helper()
	cred := s.Issue(user, 10*time.Minute)
	c := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password)
	relay := c.allocate()
	if r := c.do(stun.MethodChannelBind, channelNumber(number), peerAddr{peer.IP.To4(), peer.Port}); errCode(r) != 0 {
		t.Fatalf("ChannelBind: %d", errCode(r))
	}
	return c, relay
}

// relaysBothWays checks that n messages of ChannelData on channel number reach the peer from
// the relay address, and n datagrams from the peer reach the client as ChannelData.
func relaysBothWays(t *testing.T, c *rawClient, number uint16, peer net.PacketConn, relay *net.UDPAddr, n int) {
	t.Helper()
	for i := range n {
		msg := []byte(fmt.Sprintf("to peer %d%s", i, bytes.Repeat([]byte("x"), i%4))) // every padding
		c.send(channelData(number, msg))
		got, from := recvFrom(peer, 3*time.Second)
		if !bytes.Equal(got, msg) {
			t.Fatalf("peer got %q, want %q", got, msg)
		}
		if from.(*net.UDPAddr).Port != relay.Port {
			t.Fatalf("from port %d, the relay is %d", from.(*net.UDPAddr).Port, relay.Port)
		}
		back := []byte(fmt.Sprintf("to client %d%s", i, bytes.Repeat([]byte("y"), i%4)))
		if _, err := peer.WriteTo(back, from); err != nil {
			t.Fatal(err)
		}
		got, _ = recvFrom(c.udp, 3*time.Second)
		if len(got) < 4 || len(got)%4 != 0 {
			t.Fatalf("client got %q: not padded ChannelData", got)
		}
		if ch, l := binary.BigEndian.Uint16(got), int(binary.BigEndian.Uint16(got[2:])); ch != number || l != len(back) ||
			!bytes.Equal(got[4:4+l], back) {
			t.Fatalf("client got channel %#x, %q; want %#x, %q", ch, got[4:4+l], number, back)
		}
	}
}

// nothingArrives checks that nothing reaches pc within d.
func nothingArrives(t *testing.T, pc net.PacketConn, d time.Duration, what string) {
	t.Helper()
	if got, _ := recvFrom(pc, d); got != nil {
		t.Errorf("%s: got %q", what, got)
	}
}

func TestFastPathRelaysBothWays(t *testing.T) {
	s := startServer(t, loopback)
	peer, pa := newPeer(t)
	c, relay := bind(t, s, "prt_fast", 0x4001, pa)
	want := []boundChannel{{number: 0x4001, peer: netip.MustParseAddrPort(pa.String())}}
	if got := s.fastChannels(c.udp.LocalAddr()); len(got) != 1 || got[0] != want[0] {
		t.Fatalf("fast path channels %v, want %v", got, want)
	}
	before := s.RelayedPackets("prt_fast")
	relaysBothWays(t, c, 0x4001, peer, relay, 20)
	if n := s.RelayedPackets("prt_fast") - before; n != 40 {
		t.Errorf("counted %d relayed packets, want 40", n)
	}
}

// A ChannelData message on a channel nobody bound, a Send indication, a peer without a
// permission: pion's business, and the fast path must not relay differently.
func TestFastPathLeavesTheRestToPion(t *testing.T) {
	s := startServer(t, loopback)
	peer, pa := newPeer(t)
	other, oa := newPeer(t)
	// Permissions are per IP address (RFC 8656): the stranger is on another one.
	stranger, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	}
	defer stranger.Close()
	c, relay := bind(t, s, "prt_rest", 0x4001, pa)

	c.send(channelData(0x4002, []byte("unbound channel")))
	nothingArrives(t, peer, 300*time.Millisecond, "peer, ChannelData on an unbound channel")
	nothingArrives(t, other, 10*time.Millisecond, "other peer, ChannelData on an unbound channel")

	// Send indication to a peer with a permission (no channel): pion relays it, and the
	// peer's answer comes back as a Data indication.
	if r := c.do(stun.MethodCreatePermission, peerAddr{oa.IP.To4(), oa.Port}); errCode(r) != 0 {
		t.Fatalf("CreatePermission: %d", errCode(r))
	}
	c.send(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAddr{oa.IP.To4(), oa.Port}, stun.RawAttribute{Type: stun.AttrData, Value: []byte("indication")}).Raw)
	if got, _ := recvFrom(other, 3*time.Second); string(got) != "indication" {
		t.Fatalf("other peer got %q from a Send indication", got)
	}
	other.WriteTo([]byte("data indication"), relay)
	m := c.read(3 * time.Second)
	if m == nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
		t.Fatalf("client got %v, want a Data indication", m)
	}
	if v, _ := m.Get(stun.AttrData); string(v) != "data indication" {
		t.Errorf("Data indication carries %q", v)
	}

	// A peer without a permission reaches nobody.
	stranger.WriteTo([]byte("stranger"), relay)
	nothingArrives(t, c.udp, 300*time.Millisecond, "client, from a peer without a permission")

	// The bound channel goes to its peer only.
	c.send(channelData(0x4001, []byte("bound")))
	if got, _ := recvFrom(peer, 3*time.Second); string(got) != "bound" {
		t.Fatalf("peer got %q", got)
	}
	nothingArrives(t, other, 200*time.Millisecond, "other peer, ChannelData of another peer's channel")
}

// When a channel or its allocation ends, the fast path forgets it: nothing is relayed as
// ChannelData any more, either way.
func TestFastPathStops(t *testing.T) {
	cases := []struct {
		name string
		end  func(t *testing.T, s *Server, c *rawClient)
		// The peer's datagram still reaches the client as a Data indication (the channel
		// expired, its permission did not).
		dataIndication bool
	}{
		{name: "channel expires", end: func(t *testing.T, s *Server, c *rawClient) {
			deadline := time.Now().Add(5 * time.Second)
			for len(s.fastChannels(c.udp.LocalAddr())) != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the channel did not leave the fast path")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}, dataIndication: true},
		{name: "client deallocates", end: func(t *testing.T, s *Server, c *rawClient) {
			if r := c.do(stun.MethodRefresh, lifetime(0)); errCode(r) != 0 {
				t.Fatalf("Refresh 0: %d", errCode(r))
			}
		}},
		{name: "participant revoked", end: func(t *testing.T, s *Server, c *rawClient) {
			if n := s.Revoke("prt_stop", "removed"); n != 1 {
				t.Fatalf("Revoke closed %d allocations", n)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(c *Config) { loopback(c); c.channelLifetime = 2 * time.Second })
			peer, pa := newPeer(t)
			c, relay := bind(t, s, "prt_stop", 0x4003, pa)
			relaysBothWays(t, c, 0x4003, peer, relay, 3)
			tc.end(t, s, c)
			if got := s.fastChannels(c.udp.LocalAddr()); got != nil && len(got) != 0 {
				t.Errorf("fast path still has %v", got)
			}
			c.send(channelData(0x4003, []byte("after")))
			nothingArrives(t, peer, 300*time.Millisecond, "peer")
			peer.WriteTo([]byte("after"), relay)
			got, _ := recvFrom(c.udp, 300*time.Millisecond)
			switch {
			case tc.dataIndication && !stun.IsMessage(got):
				t.Errorf("client got %q, want a Data indication", got)
			case !tc.dataIndication && got != nil:
				t.Errorf("client got %q", got)
			}
		})
	}
}

// A client over TCP stays with pion (its ChannelData is framed in a stream), and pion
// relays for it as before.
func TestFastPathTCPClientStaysWithPion(t *testing.T) {
	s := startServer(t, loopback)
	conn, c, peer, relay := bindTCP(t, s, "prt_tcp", &net.Dialer{})
	if cur := s.clients.Load(); cur != nil && len(*cur) != 0 {
		t.Fatalf("the fast path took a TCP client's channel: %v", *cur)
	}
	c.send(channelData(0x4001, []byte("over tcp"))) // 8 bytes: no padding needed
	got, from := recvFrom(peer, 3*time.Second)
	if string(got) != "over tcp" || from.(*net.UDPAddr).Port != relay.Port {
		t.Fatalf("peer got %q from %v", got, from)
	}
	peer.WriteTo([]byte("back"), from)
	hdr := make([]byte, 8)
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Read(hdr); err != nil || binary.BigEndian.Uint16(hdr) != 0x4001 || string(hdr[4:]) != "back" {
		t.Fatalf("client got %q: %v", hdr, err)
	}
}
