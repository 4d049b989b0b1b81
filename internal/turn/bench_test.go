package turn

import (
	"encoding/binary"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// BenchmarkRelayHop measures the latency one relay hop adds: round trips from a TURN client
// through its allocation to a plain UDP echo peer and back, against round trips between the
// same two sockets directly (the floor), all on loopback. It reports medians and
// hop-us = (relayed RTT - direct RTT) / 2.
//
// By default it measures an in-process Bedside relay. scripts/bench-turn.sh points it at
// running servers (Bedside's and coturn's) with BEDSIDE_BENCH_TURN_ADDR=host:port and
// BEDSIDE_BENCH_TURN_SECRET (their use-auth-secret secret).
func BenchmarkRelayHop(b *testing.B) {
	addr, secret := os.Getenv("BEDSIDE_BENCH_TURN_ADDR"), os.Getenv("BEDSIDE_BENCH_TURN_SECRET")
	if addr == "" {
		s := startServer(b, loopback)
		addr, secret = s.udpAddr(), string(secretA)
	}
	username := strconv.FormatInt(time.Now().Add(10*time.Minute).Unix(), 10) + ":bench-latency"
	c := newUDPClient(b, addr, username, restPassword([]byte(secret), username))
	c.allocate()
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	pa := peer.LocalAddr().(*net.UDPAddr)
	if r := c.do(stun.MethodChannelBind, channelNumber(0x4000), peerAddr{pa.IP.To4(), pa.Port}); errCode(r) != 0 {
		b.Fatalf("ChannelBind: %d", errCode(r))
	}
	go func() { // the echo peer
		buf := make([]byte, 1500)
		for {
			n, from, err := peer.ReadFrom(buf)
			if err != nil {
				return
			}
			peer.WriteTo(buf[:n], from)
		}
	}()
	payload := make([]byte, 100)
	buf := make([]byte, 1500)
	roundTrip := func(relayed bool, seq uint32) time.Duration {
		binary.BigEndian.PutUint32(payload, seq)
		start := time.Now()
		if relayed {
			c.udp.WriteTo(channelData(0x4000, payload), c.server)
		} else {
			c.udp.WriteTo(payload, pa)
		}
		c.udp.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := c.udp.ReadFrom(buf)
			if err != nil {
				b.Fatalf("no echo: %v", err)
			}
			data := buf[:n]
			if relayed {
				if n < 8 || buf[0]>>6 != 1 {
					continue // a STUN message
				}
				data = buf[4:n]
			}
			if len(data) >= 4 && binary.BigEndian.Uint32(data) == seq {
				return time.Since(start)
			}
		}
	}
	for i := range 200 { // warm up both paths
		roundTrip(true, uint32(i))
		roundTrip(false, uint32(i))
	}
	var relayed, direct []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		relayed = append(relayed, roundTrip(true, uint32(1000+i)))
		direct = append(direct, roundTrip(false, uint32(1000+i)))
	}
	b.StopTimer()
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Microsecond)
	}
	p90 := func(d []time.Duration) float64 { return float64(d[len(d)*9/10]) / float64(time.Microsecond) }
	r, d := med(relayed), med(direct)
	b.ReportMetric(r, "relay-rtt-us")
	b.ReportMetric(p90(relayed), "relay-rtt-p90-us")
	b.ReportMetric(d, "direct-rtt-us")
	b.ReportMetric((r-d)/2, "hop-us")
	b.ReportMetric(0, "ns/op")
}
