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
