package turn

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// rawClient speaks TURN by hand, so tests can send exactly the attribute forms an attacker
// would (an IPv4-mapped IPv6 peer, an IPv6 peer on an IPv4 allocation) and read the error
// codes the server answers.
type rawClient struct {
	t        testing.TB
	udp      net.PacketConn // UDP transport, or
	stream   net.Conn       // TCP or TLS transport
	server   net.Addr
	username string
	password string
	realm    string
	nonce    string
}

func newUDPClient(t testing.TB, server string, username, password string) *rawClient {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	addr, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{t: t, udp: pc, server: addr, username: username, password: password}
}

func newStreamClient(t testing.TB, conn net.Conn, username, password string) *rawClient {
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, stream: conn, server: conn.RemoteAddr(), username: username, password: password}
}

func (c *rawClient) send(b []byte) {
	c.t.Helper()
	var err error
	if c.udp != nil {
		_, err = c.udp.WriteTo(b, c.server)
	} else {
		_, err = c.stream.Write(b)
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next STUN message from the server (skipping anything else), or nil on
// timeout.
func (c *rawClient) read(timeout time.Duration) *stun.Message {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var b []byte
		if c.udp != nil {
			buf := make([]byte, 2048)
			c.udp.SetReadDeadline(deadline)
			n, _, err := c.udp.ReadFrom(buf)
			if err != nil {
				return nil
			}
			b = buf[:n]
		} else {
			c.stream.SetReadDeadline(deadline)
			hdr := make([]byte, 4)
			if _, err := io.ReadFull(c.stream, hdr); err != nil {
				return nil
			}
			l := int(binary.BigEndian.Uint16(hdr[2:]))
			if hdr[0]>>6 == 0 {
				l += 16
			} else {
				l = (l + 3) &^ 3
			}
			rest := make([]byte, l)
			if _, err := io.ReadFull(c.stream, rest); err != nil {
				return nil
			}
			b = append(hdr, rest...)
		}
		if !stun.IsMessage(b) {
			continue
		}
		m := &stun.Message{Raw: b}
		if m.Decode() == nil {
			return m
		}
	}
}

// do sends a request of method with attrs, signed with the client's credentials (after the
// first 401 gave it realm and nonce; stale nonces are retried), and returns the response.
func (c *rawClient) do(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	for range 3 {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != "" {
			setters = append(setters, stun.NewUsername(c.username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(c.username, c.realm, c.password))
		}
		setters = append(setters, stun.Fingerprint)
		req := stun.MustBuild(setters...)
		c.send(req.Raw)
		var resp *stun.Message
		for resp == nil || resp.TransactionID != req.TransactionID {
			resp = c.read(3 * time.Second)
			if resp == nil {
				c.t.Fatalf("%s: no answer", method)
			}
		}
		code := errCode(resp)
		if code == stun.CodeUnauthorized && c.nonce == "" || code == stun.CodeStaleNonce {
			var n stun.Nonce
			var r stun.Realm
			if n.GetFrom(resp) == nil && r.GetFrom(resp) == nil {
				c.nonce, c.realm = n.String(), r.String()
				continue
			}
		}
		return resp
	}
	c.t.Fatalf("%s: no answer after retries", method)
	return nil
}

// errCode is the response's error code (0 for a success).
func errCode(m *stun.Message) stun.ErrorCode {
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var e stun.ErrorCodeAttribute
	if e.GetFrom(m) != nil {
		return -1
	}
	return e.Code
}

// requestedTransport is a REQUESTED-TRANSPORT attribute (17 UDP, 6 TCP).
type requestedTransport byte

func (r requestedTransport) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{byte(r), 0, 0, 0})
	return nil
}

// lifetime is a LIFETIME attribute.
type lifetime time.Duration

func (l lifetime) AddTo(m *stun.Message) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(time.Duration(l)/time.Second))
	m.Add(stun.AttrLifetime, v)
	return nil
}

func getLifetime(m *stun.Message) time.Duration {
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		return -1
	}
	return time.Duration(binary.BigEndian.Uint32(v)) * time.Second
}

// peerAddr is an XOR-PEER-ADDRESS in the exact form given: a 4-byte IP is sent as family
// IPv4, a 16-byte IP as family IPv6, even when it is IPv4-mapped (::ffff:a.b.c.d).
type peerAddr struct {
	ip   net.IP
	port int
}

func (p peerAddr) AddTo(m *stun.Message) error {
	family, n := byte(1), 4
	if len(p.ip) == 16 {
		family, n = 2, 16
	}
	v := make([]byte, 4+n)
	v[1] = family
	binary.BigEndian.PutUint16(v[2:], uint16(p.port)^uint16(magicCookie>>16))
	var mask [16]byte
	binary.BigEndian.PutUint32(mask[:4], magicCookie)
	copy(mask[4:], m.TransactionID[:])
	for i := range n {
		v[4+i] = p.ip[i] ^ mask[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

// channelNumber is a CHANNEL-NUMBER attribute.
type channelNumber uint16

func (c channelNumber) AddTo(m *stun.Message) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint16(v, uint16(c))
	m.Add(stun.AttrChannelNumber, v)
	return nil
}

// relayedAddr reads XOR-RELAYED-ADDRESS from an Allocate success.
func relayedAddr(t testing.TB, m *stun.Message) *net.UDPAddr {
	t.Helper()
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("no relayed address in %v: %v", m, err)
	}
	return &net.UDPAddr{IP: a.IP, Port: a.Port}
}

// allocate makes a UDP allocation and fails the test unless it succeeds.
func (c *rawClient) allocate() *net.UDPAddr {
	c.t.Helper()
	r := c.do(stun.MethodAllocate, requestedTransport(17))
	if code := errCode(r); code != 0 {
		c.t.Fatalf("Allocate: error %d", code)
	}
	return relayedAddr(c.t, r)
}

// channelData is one ChannelData message.
func channelData(ch uint16, data []byte) []byte {
	b := make([]byte, 4+len(data))
	binary.BigEndian.PutUint16(b, ch)
	binary.BigEndian.PutUint16(b[2:], uint16(len(data)))
	copy(b[4:], data)
	return b
}
