package turn

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenUDP opens a UDP socket with SO_REUSEPORT, so that several sockets share one port
// and the kernel spreads clients over them (by their address: one client always reaches the
// same socket, and so the same allocation manager). Large buffers absorb bursts while a read
// loop is busy.
func listenUDP(addr string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, err
	}
	if u, ok := pc.(*net.UDPConn); ok {
		setBuffer(u, 4<<20)
	}
	return pc, nil
}

// setBuffer asks for n bytes of socket buffer each way; as root past the sysctl limits
// (SO_RCVBUFFORCE), otherwise up to them.
func setBuffer(u *net.UDPConn, n int) {
	rc, err := u.SyscallConn()
	if err == nil {
		rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
				u.SetReadBuffer(n)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) != nil {
				u.SetWriteBuffer(n)
			}
		})
	}
}

// listenUDPGroup binds n sockets to addr with SO_REUSEPORT and makes sure that nobody else
// is in the group: Linux lets any socket of the same user with SO_REUSEPORT join it (even
// one bound to port 0, which may be handed an existing group's port), and the kernel would
// then share our clients with it. For port 0 a free port is found first without
// SO_REUSEPORT, and the whole thing is retried if another socket slipped in.
func listenUDPGroup(addr string, n int) ([]net.PacketConn, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", portText, err)
	}
	for attempt := 0; ; attempt++ {
		p := port
		if p == 0 {
			probe, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
			if err != nil {
				return nil, err
			}
			p = probe.LocalAddr().(*net.UDPAddr).Port
			probe.Close()
		}
		var conns []net.PacketConn
		closeAll := func() {
			for _, c := range conns {
				c.Close()
			}
		}
		bound := net.JoinHostPort(host, strconv.Itoa(p))
		for range n {
			c, err := listenUDP(bound)
			if err != nil {
				closeAll()
				if port == 0 && attempt < 20 {
					conns = nil
					break
				}
				return nil, err
			}
			conns = append(conns, c)
		}
		if len(conns) != n {
			continue
		}
		others := socketsOn(conns[0].LocalAddr().(*net.UDPAddr)) - n
		if others <= 0 {
			return conns, nil
		}
		closeAll()
		if port != 0 || attempt >= 20 {
			return nil, fmt.Errorf("udp %s is in use by %d other socket(s) (another process with SO_REUSEPORT)", bound, others)
		}
	}
}

// socketsOn counts the UDP sockets of this network namespace bound to a's address and port
// (from /proc/net/udp and udp6); -1 when that cannot be read.
func socketsOn(a *net.UDPAddr) int {
	want := ""
	if v4 := a.IP.To4(); v4 != nil {
		want = fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(v4), a.Port)
	}
	count := 0
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			return -1
		}
		for i, line := range strings.Split(string(data), "\n") {
			fields := strings.Fields(line)
			if i == 0 || len(fields) < 2 {
				continue
			}
			local := fields[1]
			if want != "" {
				if local == want {
					count++
				}
				continue
			}
			if j := strings.LastIndexByte(local, ':'); j > 0 {
				if p, err := strconv.ParseUint(local[j+1:], 16, 16); err == nil && int(p) == a.Port {
					count++
				}
			}
		}
	}
	return count
}
