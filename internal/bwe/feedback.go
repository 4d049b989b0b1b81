// Package bwe is the SFU's send-side bandwidth estimator for one subscriber connection:
// it records every packet sent with a transport-wide sequence number, reads the
// subscriber's transport-wide congestion control feedback (draft-holmer-rmcat-transport-
// wide-cc-extensions-01) and keeps an estimate of the bandwidth towards the subscriber
// from the loss and the queueing delay the feedback shows (the rules of draft-ietf-rmcat-
// gcc-02, written for a forwarder that chooses layers rather than an encoder's rate).
//
// It replaces pion's GCC interceptor (design decision 53): that one keeps a map entry and
// a list element per packet sent and parses feedback into a slice of objects per packet,
// which cost the server a fifth of its CPU per forwarded packet and nearly all of its
// allocations (docs/benchmarks.md). Here a packet sent is one atomic store into a ring,
// and feedback is read in place, allocating nothing.
package bwe

import (
	"encoding/binary"
	"errors"
)

// Transport-wide feedback is RTCP transport-layer feedback (PT 205) with FMT 15.
const (
	rtcpRTPFB   = 205
	fmtTWCC     = 15
	twccMinSize = 20 // header, sender and media SSRC, base, count, reference, fb count
)

// errFeedback is a malformed transport-wide feedback packet.
var errFeedback = errors.New("bwe: malformed transport-wide feedback")

// Feedback reports whether one RTCP packet (its header first; not a compound) is
// transport-wide feedback, and if so its media SSRC.
func Feedback(pkt []byte) (mediaSSRC uint32, ok bool) {
	if len(pkt) < twccMinSize || pkt[0]>>6 != 2 || pkt[0]&0x1f != fmtTWCC || pkt[1] != rtcpRTPFB {
		return 0, false
	}
	return binary.BigEndian.Uint32(pkt[8:]), true
}

// Status symbols of transport-wide feedback.
const (
	notReceived = 0
	smallDelta  = 1
	largeDelta  = 2
)

// eachStatus reads transport-wide feedback pkt in place and calls f for every packet it
// reports, in sequence order: its transport-wide sequence number, whether it arrived and,
// if so, its arrival time in microseconds on the receiver's clock (the reference time
// plus the deltas). It allocates nothing.
func eachStatus(pkt []byte, f func(seq uint16, received bool, arrivalUs int64)) error {
	if len(pkt) < twccMinSize {
		return errFeedback
	}
	if pkt[0]&0x20 != 0 { // padding: its last byte is the count
		p := int(pkt[len(pkt)-1])
		if p == 0 || p > len(pkt)-twccMinSize {
			return errFeedback
		}
		pkt = pkt[:len(pkt)-p]
	}
	base := binary.BigEndian.Uint16(pkt[12:])
	count := int(binary.BigEndian.Uint16(pkt[14:]))
	ref := int64(int32(binary.BigEndian.Uint32(pkt[16:])) >> 8) // 24-bit signed, 64 ms units
	// Two passes over the chunks: the first checks the whole packet (every symbol valid,
	// every delta there) and finds where the deltas start (after the last chunk), so that
	// a packet malformed half-way reports nothing rather than its first part; the second
	// reads statuses and deltas together.
	pos, seen, need := twccMinSize, 0, 0
	for seen < count {
		if pos+2 > len(pkt) {
			return errFeedback
		}
		chunk := binary.BigEndian.Uint16(pkt[pos:])
		n := min(chunkLen(chunk), count-seen)
		b, ok := deltaBytes(chunk, n)
		if !ok {
			return errFeedback
		}
		seen += n
		need += b
		pos += 2
	}
	deltas := pos
	if deltas+need > len(pkt) {
		return errFeedback
	}
	at := ref * 64_000
	seq, left := base, count
	for c := twccMinSize; left > 0; c += 2 {
		chunk := binary.BigEndian.Uint16(pkt[c:])
		n := min(chunkLen(chunk), left)
		for i := range n {
			sym := chunkSymbol(chunk, i)
			switch sym {
			case notReceived:
				f(seq, false, 0)
			case smallDelta: // the first pass checked that the delta is there
				at += int64(pkt[deltas]) * 250
				deltas++
				f(seq, true, at)
			case largeDelta:
				at += int64(int16(binary.BigEndian.Uint16(pkt[deltas:]))) * 250
				deltas += 2
				f(seq, true, at)
			}
			seq++
		}
		left -= n
	}
	return nil
}

// deltaBytes is how many bytes of receive deltas the first n packets of a chunk have, and
// false if one of their symbols is not a valid status.
func deltaBytes(c uint16, n int) (int, bool) {
	if c&0x8000 == 0 { // run length: one symbol for all
		sym := chunkSymbol(c, 0)
		return n * sym, sym <= largeDelta // 0, 1 or 2 bytes each
	}
	b := 0
	for i := range n {
		sym := chunkSymbol(c, i)
		if sym > largeDelta {
			return 0, false
		}
		b += sym
	}
	return b, true
}

// chunkLen is how many packets a packet status chunk speaks of.
func chunkLen(c uint16) int {
	switch {
	case c&0x8000 == 0: // run length: 2-bit symbol, 13-bit length
		return int(c & 0x1fff)
	case c&0x4000 == 0: // status vector of 14 one-bit symbols
		return 14
	default: // status vector of 7 two-bit symbols
		return 7
	}
}

// chunkSymbol is the status of the i-th packet of a chunk.
func chunkSymbol(c uint16, i int) int {
	switch {
	case c&0x8000 == 0:
		return int(c>>13) & 3
	case c&0x4000 == 0:
		return int(c>>(13-i)) & 1 // 0 not received, 1 small delta
	default:
		return int(c>>(12-2*i)) & 3
	}
}
