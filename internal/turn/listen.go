package turn

import (
	"context"
	"net"
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
