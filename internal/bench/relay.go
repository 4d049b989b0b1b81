package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
)

// The floor: a bare UDP relay of the same packets, in its own process on the server's
// CPUs (`bedside bench relay`, started by the bench). Like the SFU it serves everyone on
// one UDP port (the SFU's ICE UDP mux, --sfu-udp-addr); unlike it, it has one read loop
// and nothing else: each datagram read from a member is written, from that loop, to every
// other member of its room. No ICE, DTLS, SRTP or RTCP, no queues, no per-subscriber state
// beyond an address: the least work any forwarder does to move these packets.
//
// Control, on stdin and stdout, one JSON line each way:
//
//	-> {"rooms":[4,4,4]}   members per room
//	<- {"port":40123}      the relay's port on 127.0.0.1
//
// A member says hello first: a datagram of 9 bytes, 0x00 then its room and member numbers
// (big-endian uint32). Datagrams from an address that has not said hello are dropped. The
// relay runs until stdin is closed.

type relayRequest struct {
	Rooms []int `json:"rooms"`
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
	go func() { defer close(done); relayLoop(c, req.Rooms) }() // ends when c is closed
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

func relayLoop(c *net.UDPConn, sizes []int) {
	rooms := make([][]netip.AddrPort, len(sizes)) // member addresses (zero: no hello yet)
	for i, n := range sizes {
		rooms[i] = make([]netip.AddrPort, n)
	}
	type place struct{ room, member int }
	where := map[netip.AddrPort]place{}
	buf := make([]byte, 1500)
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
			if r < len(rooms) && m < len(rooms[r]) {
				rooms[r][m] = from
				where[from] = place{r, m}
			}
			continue
		}
		p, ok := where[from]
		if !ok {
			continue
		}
		for i, to := range rooms[p.room] {
			if i != p.member && to.IsValid() {
				c.WriteToUDPAddrPort(buf[:n], to)
			}
		}
	}
}

// relayHello is a member's hello.
func relayHello(room, member int) []byte {
	b := make([]byte, 9)
	binary.BigEndian.PutUint32(b[1:], uint32(room))
	binary.BigEndian.PutUint32(b[5:], uint32(member))
	return b
}
