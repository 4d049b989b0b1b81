package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// runFloor measures the bare UDP relay with the scenario's rooms and packets; withSRTP,
// the SRTP floor (relay.go): the members encrypt what they send and decrypt what they
// receive, with the relay's keys for them.
func runFloor(ctx context.Context, cfg Config, withSRTP bool) (PhaseResult, error) {
	topo := cfg.topology()
	req := relayRequest{SRTP: withSRTP}
	for _, r := range topo.rooms {
		req.Rooms = append(req.Rooms, len(r))
	}
	rl, err := startRelay(ctx, cfg)
	if err != nil {
		return PhaseResult{}, err
	}
	defer rl.stop()
	reply, err := rl.rooms(req)
	if err != nil {
		return PhaseResult{}, err
	}
	rss0 := int64(0)
	if rl.pid != 0 {
		rss0, _ = procRSS(rl.pid) // its sockets open, nothing relayed yet
	}

	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var conns []*net.UDPConn
	defer func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	l := &load{w: &window{}, members: topo.members(), pid: rl.pid, rss0: rss0, serverPorts: map[int]bool{reply.Port: true}, dbg: cfg.dbg,
		serverCPUs: cfg.ServerCPUs, loadCPUs: cfg.LoadCPUs}
	clientPorts := map[int]bool{}
	l.clientPorts = func() map[int]bool { return clientPorts }
	pubIdx := 0
	for ri, room := range topo.rooms {
		var pubs []*publisher
		var subs []*subscriber
		for mi, ro := range room {
			c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: reply.Port})
			if err != nil {
				return PhaseResult{}, err
			}
			conns = append(conns, c)
			clientPorts[c.LocalAddr().(*net.UDPAddr).Port] = true
			c.SetReadBuffer(1 << 20)
			if err := enableTimestamps(c); err != nil {
				return PhaseResult{}, err
			}
			if _, err := c.Write(relayHello(ri, mi)); err != nil { // the relay learns our address
				return PhaseResult{}, err
			}
			var in, out *srtp.Context // the member's SRTP floor contexts: from the relay, to it
			if withSRTP {
				if in, err = floorContext(ri, mi, false, srtp.SRTPReplayProtection(64)); err != nil {
					return PhaseResult{}, err
				}
				if out, err = floorContext(ri, mi, true); err != nil {
					return PhaseResult{}, err
				}
			}
			var pub *publisher
			if ro.publish {
				// The top layer only: what the SFU forwards to a subscriber.
				pub = newPublisher(pubIdx, cfg.Profile, l.w, false)
				pubIdx++
				write := func(b []byte) error { _, err := c.Write(b); return err }
				if out != nil {
					// The publisher's one goroutine writes: one buffer.
					sealed := make([]byte, 0, 1500)
					write = func(b []byte) error {
						p, err := out.EncryptRTP(sealed[:0], b, nil)
						if err != nil {
							return err
						}
						_, err = c.Write(p)
						return err
					}
				}
				pub.writeAudio = write
				for i := range pub.writeVideo {
					pub.writeVideo[i] = write
				}
				pub.start()
				pubs = append(pubs, pub)
			}
			fr := &floorRx{w: l.w, bySSRC: map[uint32]*trackRx{}, srtp: in}
			if ro.subscribe {
				subs = append(subs, &subscriber{tracks: fr.tracks})
			}
			wg.Add(1)
			go func() { defer wg.Done(); fr.read(c) }() // ends when c is closed
		}
		want := roomStreams(room, pubs)
		si := 0
		for mi, ro := range room {
			if ro.subscribe {
				subs[si].wants = want[mi]
				si++
			}
		}
		l.pubs = append(l.pubs, pubs...)
		l.subs = append(l.subs, subs...)
	}
	for _, p := range l.pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(lctx) }() // ends with lctx
	}
	if err := l.ready(ctx, cfg.JoinTimeout); err != nil {
		return PhaseResult{}, err
	}
	name := "floor"
	if withSRTP {
		name = "srtp floor"
	}
	return l.measure(ctx, cfg, name)
}

// roomStreams returns, for each member of a room, what it should receive: from every other
// member who publishes, the audio stream and one of the camera's layers (pubs: the room's
// publishers in member order).
func roomStreams(room []role, pubs []*publisher) [][]want {
	byMember := make([]*publisher, len(room))
	j := 0
	for i, ro := range room {
		if ro.publish {
			byMember[i] = pubs[j]
			j++
		}
	}
	out := make([][]want, len(room))
	for i, ro := range room {
		if !ro.subscribe {
			continue
		}
		for k, p := range byMember {
			if k == i || p == nil {
				continue
			}
			out[i] = append(out[i], want{p.audio.id})
			if len(p.video) > 0 {
				var w want
				for _, v := range p.video {
					w = append(w, v.id)
				}
				out[i] = append(out[i], w)
			}
		}
	}
	return out
}

// floorRx reads one floor member's socket; each SSRC is a track.
type floorRx struct {
	w      *window
	srtp   *srtp.Context // the SRTP floor's, to decrypt (nil: plain RTP)
	mu     sync.Mutex
	bySSRC map[uint32]*trackRx
}

func (f *floorRx) read(c *net.UDPConn) {
	buf := make([]byte, 1500)
	var (
		oob   [128]byte
		plain [1500]byte
		hdr   rtp.Header
	)
	for {
		n, oobn, _, _, err := c.ReadMsgUDP(buf, oob[:])
		at := now()
		if err != nil {
			return // closed
		}
		sock, _ := kernelTime(oob[:oobn])
		if n < 12 {
			continue
		}
		pkt := buf[:n]
		if f.srtp != nil {
			if pkt, err = f.srtp.DecryptRTP(plain[:0], pkt, &hdr); err != nil {
				continue // counted as lost
			}
		}
		ssrc := uint32(buf[8])<<24 | uint32(buf[9])<<16 | uint32(buf[10])<<8 | uint32(buf[11])
		f.mu.Lock()
		t := f.bySSRC[ssrc]
		if t == nil {
			t = newTrackRx(f.w)
			f.bySSRC[ssrc] = t
		}
		f.mu.Unlock()
		t.packet(pkt, at, sock)
	}
}

func (f *floorRx) tracks() []*trackRx {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*trackRx, 0, len(f.bySSRC))
	for _, t := range f.bySSRC {
		out = append(out, t)
	}
	return out
}

// relayProc is the running floor relay: a child process, or (tests) a goroutine here.
type relayProc struct {
	pid   int
	in    io.WriteCloser
	out   interface{ ReadBytes(byte) ([]byte, error) }
	child *child
	done  chan error
}

func startRelay(ctx context.Context, cfg Config) (*relayProc, error) {
	if cfg.RelayInProcess {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		// Its CPU is this whole process's: only good enough for a test of the bench.
		rp := &relayProc{pid: os.Getpid(), in: inW, out: bufio.NewReader(outR), done: make(chan error, 1)}
		go func() { // ends when rp.in is closed
			err := RunRelay(context.WithoutCancel(ctx), inR, outW)
			outW.CloseWithError(err)
			inR.Close()
			rp.done <- err
		}()
		return rp, nil
	}
	c, err := startChild("floor relay", cfg.Exe, []string{"bench", "relay"}, cfg.ServerCPUs, environ(), nil)
	if err != nil {
		return nil, err
	}
	return &relayProc{pid: c.pid(), in: c.stdin, out: c.stdout, child: c}, nil
}

func (r *relayProc) rooms(req relayRequest) (relayReply, error) {
	b, _ := json.Marshal(req)
	if _, err := r.in.Write(append(b, '\n')); err != nil {
		return relayReply{}, fmt.Errorf("floor relay: %w", err)
	}
	line, err := r.out.ReadBytes('\n')
	if err != nil {
		msg := ""
		if r.child != nil {
			msg = r.child.log.String()
		}
		return relayReply{}, fmt.Errorf("floor relay: %w %s", err, msg)
	}
	var rep relayReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return relayReply{}, fmt.Errorf("floor relay: %w", err)
	}
	if rep.Port == 0 {
		return relayReply{}, fmt.Errorf("floor relay: no port")
	}
	return rep, nil
}

func (r *relayProc) stop() {
	if r.child != nil {
		r.child.stop(5 * time.Second)
		return
	}
	r.in.Close()
	<-r.done
}
