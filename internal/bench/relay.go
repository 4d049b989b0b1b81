package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// The floor: a bare UDP relay of the same packets, in its own process on the server's
// CPUs (`bedside bench relay`, started by the bench). It has one UDP socket per member of
// a room, like an SFU's one transport per participant, and one read loop per socket; each
// packet read from a member is written, from that read loop, to every other member of its
// room that has said hello. No SRTP, no RTCP, no per-subscriber state beyond an address:
// the least work any forwarder does to move these packets.
//
// Control, on stdin and stdout, one JSON line each way:
//
//	-> {"rooms":[4,4,4]}                  members per room
//	<- {"ports":[[p,p,p,p],[...],[...]]}  each member's relay port, on 127.0.0.1
//
// A member's address is the source of the first datagram its socket receives (a hello:
// any datagram that is not RTP). The relay runs until stdin is closed.

type relayRequest struct {
	Rooms []int `json:"rooms"`
}

type relayReply struct {
	Ports [][]int `json:"ports"`
}

// maxRelayMembers bounds the sockets the relay opens.
const maxRelayMembers = 4096

type relayMember struct {
	conn *net.UDPConn
	peer atomic.Pointer[netip.AddrPort]
}

// RunRelay is the floor relay's process: it reads the rooms from in, answers the ports on
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
	rooms := make([][]*relayMember, len(req.Rooms))
	reply := relayReply{Ports: make([][]int, len(req.Rooms))}
	defer func() {
		for _, r := range rooms {
			for _, m := range r {
				m.conn.Close()
			}
		}
	}()
	for i, n := range req.Rooms {
		for range n {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return fmt.Errorf("relay: %w", err)
			}
			c.SetReadBuffer(1 << 20)
			c.SetWriteBuffer(1 << 20)
			rooms[i] = append(rooms[i], &relayMember{conn: c})
			reply.Ports[i] = append(reply.Ports[i], c.LocalAddr().(*net.UDPAddr).Port)
		}
	}
	b, _ := json.Marshal(reply)
	if _, err := out.Write(append(b, '\n')); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, r := range rooms {
		for _, m := range r {
			wg.Add(1)
			go func() { defer wg.Done(); relayLoop(m, r) }() // ends when its socket is closed
		}
	}
	// Until stdin closes (the bench is done, or gone) or ctx ends.
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, rd); close(eof) }() // ends at EOF: the parent closes it or dies
	select {
	case <-eof:
	case <-ctx.Done():
	}
	for _, r := range rooms {
		for _, m := range r {
			m.conn.Close()
		}
	}
	wg.Wait()
	return nil
}

func relayLoop(m *relayMember, room []*relayMember) {
	buf := make([]byte, 1500)
	for {
		n, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if m.peer.Load() == nil {
			m.peer.Store(&from)
		}
		if n < 12 || buf[0]>>6 != 2 {
			continue // a hello
		}
		for _, o := range room {
			if o == m {
				continue
			}
			if to := o.peer.Load(); to != nil {
				o.conn.WriteToUDPAddrPort(buf[:n], *to)
			}
		}
	}
}
