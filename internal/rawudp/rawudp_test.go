package rawudp

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestSendAndBatchRead: datagrams sent with a Sender arrive whole, from the sender's
// address; Read returns those Take leaves, in order, and Take sees every one; an IPv4
// destination works from a dual-stack (AF_INET6) socket too.
func TestSendAndBatchRead(t *testing.T) {
	for _, network := range []string{"udp4", "udp"} {
		t.Run(network, func(t *testing.T) {
			laddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
			if network == "udp" {
				laddr = &net.UDPAddr{} // wildcard: a dual-stack socket
			}
			src, err := net.ListenUDP(network, laddr)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			sock, err := NewSocket(src)
			if err != nil {
				t.Fatal(err)
			}
			rd, err := NewBatchReader(dst, 4, 1500, 0)
			if err != nil {
				t.Fatal(err)
			}
			var taken [][]byte
			rd.Take = func(b []byte, _ int, _ netip.AddrPort) bool {
				if b[0] == 't' {
					taken = append(taken, bytes.Clone(b))
					return true
				}
				return false
			}
			snd := NewSender()
			to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
			msgs := []string{"take 1", "keep 1", "take 2", "take 3", "keep 2", "keep 3"}
			for _, m := range msgs {
				if err := snd.Send(sock, []byte(m), to); err != nil {
					t.Fatal(err)
				}
			}
			dst.SetReadDeadline(time.Now().Add(5 * time.Second))
			srcPort := src.LocalAddr().(*net.UDPAddr).Port
			for _, want := range []string{"keep 1", "keep 2", "keep 3"} {
				b, _, from, err := rd.Read()
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != want || int(from.Port()) != srcPort || !from.Addr().Unmap().IsLoopback() {
					t.Fatalf("read %q from %v, want %q from port %d", b, from, want, srcPort)
				}
			}
			if len(taken) != 3 || string(taken[0]) != "take 1" || string(taken[2]) != "take 3" {
				t.Fatalf("taken %q", taken)
			}
		})
	}
}

// TestBatchSender: a batch's datagrams arrive whole at their own addresses, from an IPv4
// and from a dual-stack socket; a datagram the kernel refuses (port 0) is counted and the
// rest of the batch still goes; a full batch, or an address the socket cannot reach, is
// refused by Add; the batch is empty after Flush.
func TestBatchSender(t *testing.T) {
	for _, network := range []string{"udp4", "udp"} {
		t.Run(network, func(t *testing.T) {
			laddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
			if network == "udp" {
				laddr = &net.UDPAddr{}
			}
			src, err := net.ListenUDP(network, laddr)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			sock, err := NewSocket(src)
			if err != nil {
				t.Fatal(err)
			}
			var dsts []*net.UDPConn
			for range 3 {
				d, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				d.SetReadDeadline(time.Now().Add(5 * time.Second))
				dsts = append(dsts, d)
			}
			to := func(i int) netip.AddrPort { return dsts[i].LocalAddr().(*net.UDPAddr).AddrPort() }
			s := NewBatchSender(4)
			nowhere := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0)
			for i, a := range []netip.AddrPort{to(0), nowhere, to(1), to(2)} {
				if !s.Add(sock, []byte{'m', byte('0' + i)}, a) {
					t.Fatalf("datagram %d not added", i)
				}
			}
			if !s.Full() || s.Add(sock, []byte("over"), to(0)) {
				t.Fatal("a full batch took one more")
			}
			failed, err := s.Flush(sock)
			if failed != 1 || err == nil {
				t.Fatalf("flush: %d failed (%v), want 1 (the datagram to port 0)", failed, err)
			}
			if s.Len() != 0 {
				t.Fatalf("%d datagrams left after the flush", s.Len())
			}
			buf := make([]byte, 100)
			for i, want := range []string{"m0", "m2", "m3"} {
				n, from, err := dsts[i].ReadFromUDPAddrPort(buf)
				if err != nil || string(buf[:n]) != want || from.Port() != uint16(src.LocalAddr().(*net.UDPAddr).Port) {
					t.Fatalf("socket %d: %q from %v, %v; want %q", i, buf[:n], from, err, want)
				}
			}
			if network == "udp4" && s.Add(sock, []byte("x"), netip.MustParseAddrPort("[::1]:9")) {
				t.Fatal("an IPv6 address was added for an IPv4 socket")
			}
			if network == "udp" && s.Add(sock, []byte("x"), netip.MustParseAddrPort("[fe80::1%1]:9")) {
				t.Fatal("an address with a zone was added")
			}
		})
	}
}
