package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// The floor: a bare UDP relay of the same packets, in its own process on the server's
// CPUs (`bedside bench relay`, started by the bench). Like the SFU it serves everyone on
// one UDP port (the SFU's ICE UDP mux, --sfu-udp-addr); unlike it, it has one read loop
// and nothing else: each datagram read from a member is written, from that loop, to every
// other member of its room. No ICE, DTLS, SRTP or RTCP, no queues, no per-subscriber state
// beyond an address: the least work any forwarder does to move these packets.
//
// With "srtp" it is the SRTP floor: the same loop, but every datagram is SRTP (AEAD
// AES-256-GCM, the profile browsers and pion negotiate first), decrypted once with its
// sender's context (replay window of 64, as pion's session keeps) and encrypted for each
// receiver with that receiver's: the cryptography any SRTP forwarder must do, and nothing
// else. The keys come from each member's place (floorContext): a bench, not a secret.
//
// Control, on stdin and stdout, one JSON line each way:
//
//	-> {"rooms":[4,4,4],"srtp":false}   members per room, SRTP or not
//	<- {"port":40123}                   the relay's port on 127.0.0.1
//
// A member says hello first: a datagram of 9 bytes, 0x00 then its room and member numbers
// (big-endian uint32). Datagrams from an address that has not said hello are dropped. The
// relay runs until stdin is closed.

type relayRequest struct {
	Rooms []int `json:"rooms"`
	SRTP  bool  `json:"srtp,omitempty"`
}

type relayReply struct {
	Port int `json:"port"`
}

// maxRelayMembers bounds the members the relay serves.
const maxRelayMembers = 10000

// RunRelay is the floor relay's process: it reads the rooms from in, answers the port on
// out, and relays until in is closed or ctx ends.
func RunRelay(ctx context.Context, in io.Reader, out io.Writer) error {
	rd := bufio.NewReader(in)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("relay: reading the rooms: %w", err)
	}
	var req relayRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return fmt.Errorf("relay: rooms: %w", err)
	}
	total := 0
	for _, n := range req.Rooms {
		if n < 1 {
			return errors.New("relay: a room needs members")
		}
		total += n
	}
	if total > maxRelayMembers {
		return fmt.Errorf("relay: %d members, at most %d", total, maxRelayMembers)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	defer c.Close()
	// As much buffer as the kernel allows: the floor should not lose what an SFU's
	// socket would not.
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
	b, _ := json.Marshal(relayReply{Port: c.LocalAddr().(*net.UDPAddr).Port})
	if _, err := out.Write(append(b, '\n')); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { defer close(done); relayLoop(c, req.Rooms, req.SRTP) }() // ends when c is closed
	// Until stdin closes (the bench is done, or gone) or ctx ends.
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, rd); close(eof) }() // ends at EOF: the parent closes it or dies
	select {
	case <-eof:
	case <-ctx.Done():
	}
	c.Close()
	<-done
	return nil
}

func relayLoop(c *net.UDPConn, sizes []int, withSRTP bool) {
	rooms := make([][]netip.AddrPort, len(sizes)) // member addresses (zero: no hello yet)
	var rx, tx [][]*srtp.Context                  // per member (SRTP floor): from it, to it
	for i, n := range sizes {
		rooms[i] = make([]netip.AddrPort, n)
		if withSRTP {
			rx, tx = append(rx, make([]*srtp.Context, n)), append(tx, make([]*srtp.Context, n))
		}
	}
	type place struct{ room, member int }
	where := map[netip.AddrPort]place{}
	buf := make([]byte, 1500)
	var (
		plain, sealed [1500]byte
		hdr           rtp.Header
	)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n == 9 && buf[0] == 0 { // hello
			r, m := int(binary.BigEndian.Uint32(buf[1:])), int(binary.BigEndian.Uint32(buf[5:]))
			if r >= len(rooms) || m >= len(rooms[r]) {
				continue
			}
			if withSRTP && rx[r][m] == nil {
				in, err1 := floorContext(r, m, true, srtp.SRTPReplayProtection(64))
				out, err2 := floorContext(r, m, false)
				if err1 != nil || err2 != nil {
					continue // cannot happen: fixed key sizes
				}
				rx[r][m], tx[r][m] = in, out
			}
			rooms[r][m] = from
			where[from] = place{r, m}
			continue
		}
		p, ok := where[from]
		if !ok {
			continue
		}
		pkt := buf[:n]
		if withSRTP {
			if pkt, err = rx[p.room][p.member].DecryptRTP(plain[:0], pkt, &hdr); err != nil {
				continue
			}
		}
		for i, to := range rooms[p.room] {
			if i == p.member || !to.IsValid() {
				continue
			}
			out := pkt
			if withSRTP {
				if out, err = tx[p.room][i].EncryptRTP(sealed[:0], pkt, &hdr); err != nil {
					continue
				}
			}
			c.WriteToUDPAddrPort(out, to)
		}
	}
}

// floorProfile is the SRTP floor's protection profile: the one pion and Chromium put
// first, which the SFU's connections with the bench's clients use.
const floorProfile = srtp.ProtectionProfileAeadAes256Gcm

// floorContext is the SRTP floor's context for a member's packets to the relay (toRelay)
// or from it; both ends make the same one from the member's place.
func floorContext(room, member int, toRelay bool, opts ...srtp.ContextOption) (*srtp.Context, error) {
	seed := sha256.Sum256(fmt.Appendf(nil, "bedside bench srtp floor %d %d %t", room, member, toRelay))
	keyLen, err := floorProfile.KeyLen()
	if err != nil {
		return nil, err
	}
	saltLen, err := floorProfile.SaltLen()
	if err != nil {
		return nil, err
	}
	salt := sha256.Sum256(seed[:])
	return srtp.CreateContext(seed[:keyLen], salt[:saltLen], floorProfile, opts...)
}

// relayHello is a member's hello.
func relayHello(room, member int) []byte {
	b := make([]byte, 9)
	binary.BigEndian.PutUint32(b[1:], uint32(room))
	binary.BigEndian.PutUint32(b[5:], uint32(member))
	return b
}
