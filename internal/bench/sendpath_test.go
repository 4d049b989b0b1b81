package bench

import (
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's cost of sending one datagram on loopback, one system call per datagram
// (sendto, what the SFU's socket and the floor relay do) against one for a batch
// (sendmmsg): does batching a fan-out's writes save CPU? Each benchmark sends 1200-byte
// datagrams to 100 loopback sockets that nobody reads (their buffers fill and the kernel
// drops; draining them in this process would add their reads to its CPU), pausing after
// every round of 100, and reports the process's CPU time (user + system) per datagram.
// docs/benchmarks.md, "NACKs answered by the down tracks":
//
//	taskset -c 0 go test -run XXX -bench LoopbackSend -benchtime 200000x -count 3 ./internal/bench
const sendFanout = 100

func loopbackSockets(b *testing.B) (*net.UDPConn, []*net.UDPAddr) {
	b.Helper()
	s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	s.SetWriteBuffer(4 << 20)
	addrs := make([]*net.UDPAddr, sendFanout)
	for i := range addrs {
		r, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close() })
		addrs[i] = r.LocalAddr().(*net.UDPAddr)
	}
	return s, addrs
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkLoopbackSendto(b *testing.B) {
	s, addrs := loopbackSockets(b)
	buf := make([]byte, 1200)
	start := processCPU()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.WriteToUDP(buf, addrs[i%sendFanout]); err != nil {
			b.Fatal(err)
		}
		if i%sendFanout == sendFanout-1 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/datagram")
}

func BenchmarkLoopbackSendmmsg(b *testing.B) {
	s, addrs := loopbackSockets(b)
	raw, err := s.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1200)
	names := make([]unix.RawSockaddrInet4, sendFanout)
	iovs := make([]unix.Iovec, sendFanout)
	hdrs := make([]unix.Mmsghdr, sendFanout)
	for i, a := range addrs {
		names[i] = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
		p := (*[2]byte)(unsafe.Pointer(&names[i].Port))
		p[0], p[1] = byte(a.Port>>8), byte(a.Port) // network byte order
		iovs[i].Base = &buf[0]
		iovs[i].SetLen(len(buf))
		hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
		hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.SetIovlen(1)
	}
	start := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i += sendFanout {
		var errno syscall.Errno
		err := raw.Write(func(fd uintptr) bool {
			_, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), sendFanout, 0, 0, 0)
			return errno != unix.EAGAIN
		})
		if err != nil || errno != 0 {
			b.Fatal(err, errno)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/datagram")
}
