package sfu

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/rawudp"
)

// The direct send path (design decision 50). Below pion's interceptors, a packet to a
// subscriber went through pion's SRTP session, its mux endpoint, the ICE connection, the
// candidate pair and the UDP mux before the system call: about as much CPU again as the
// system call itself (docs/benchmarks.md). directTx, the innermost interceptor of a sub
// connection, does that part itself once the connection is up: it encrypts with an SRTP
// context of its own, made from the same DTLS keying material as pion's, and writes to
// the selected candidate pair's remote address from the SFU's own UDP socket (the one
// under the ICE mux, so the packets come from the address the subscriber's ICE chose).
// Everything above it (the transport-wide sequence number, sender reports, the
// bandwidth estimator's record) is unchanged.
//
// The subscriber's RTCP (transport-wide feedback, NACKs, picture loss, receiver reports)
// comes back the same way (design decision 55): the SFU's socket reader (rxConn.take)
// gives an RTCP datagram from the selected pair's remote address to the path, which
// decrypts it with a second context of its own (the subscriber's SRTCP keys, pion's
// replay window) and acts on it there and then (handleRTCP): no hand-off to pion's UDP
// mux, ICE connection, SRTP session and each down track's reader. What it does not take
// (another address, before the path is up, what it cannot authenticate) pion reads and
// the down tracks' readers act on as before (downTrack.readRTCP).
//
// pion does not export its DTLS connection's keying material, so directTx derives it as
// the DTLS exporter does (RFC 5705, "EXTRACTOR-dtls_srtp"): from the master secret and
// client random the handshake gives the key-log writer, and the server random and cipher
// suite of the ServerHello it sends (the SFU offers every sub connection, so its
// subscriber answers "active" and the SFU is the DTLS server). The key-log writer is
// this process's memory: nothing is written anywhere. Where any of it is missing (the
// SFU was the DTLS client, an unknown cipher suite or SRTP profile, a socket that is not
// a *net.UDPConn), the connection keeps pion's path.
//
// A stream stays on the path it started on: once a packet of an SSRC has gone through
// pion's SRTP context (the direct path was impossible when SRTP came up), the rollover
// counter is pion's, and so is every later packet of that SSRC.

const (
	directUnknown  = iota // SRTP not up yet
	directReady           // sending directly
	directDisabled        // pion's path for good
	directClosed          // the DTLS transport closed or failed: nothing is sent
)

type directTx struct {
	m    *Metrics
	keys dtlsSecrets

	state   atomic.Int32
	cryptex cryptexMode
	dtls    atomic.Pointer[webrtc.DTLSTransport]
	remote  atomic.Pointer[netip.AddrPort]
	sent    atomic.Int64 // packets sent directly (tests, Stats)
	// viaPion are the streams (SSRC) a packet of which went through pion's SRTP before
	// this path was ready: they stay there (pion's context holds their rollover counter).
	// Copy-on-write, written under pionMu; almost always empty.
	viaPion atomic.Pointer[map[uint32]bool]
	pionMu  sync.Mutex

	sock *rawudp.Socket // the SFU's socket, written with sendto(2) directly (rawudp)
	snd  *rawudp.Sender // under wmu
	wmu  sync.Mutex     // serialises ctx and snd
	ctx  *srtp.Context

	// The subscriber's RTCP (decision 55). conn routes it here by the remote address;
	// rctx, rhdr, raw and rfails are the socket reader's (rctx is set before state
	// becomes directReady, and no route exists before).
	conn    *rxConn // nil: no direct path for RTCP (unit tests, a socket not *net.UDPConn)
	routeMu sync.Mutex
	routed  netip.AddrPort // the address routed to this path (under routeMu)
	rctx    *srtp.Context
	rhdr    rtcp.Header
	raw     []rtcp.RawPacket
	rfails  int
	rtcpOff atomic.Bool // the subscriber's RTCP failed rxFailLimit times in a row here: pion's for good
	// tracks are the down tracks bound on the connection, by SSRC (copy-on-write,
	// written under tracksMu): what a message names.
	tracks   atomic.Pointer[map[uint32]*downTrack]
	tracksMu sync.Mutex
	// reportsByPion: a sender report went through pion's SRTCP (the path was not up):
	// they all do from then on.
	reportsByPion atomic.Bool
	rtcpIn        atomic.Int64 // RTCP datagrams taken (Stats, tests)
	rtcpPion      atomic.Int64 // RTCP datagrams the down tracks read from pion instead (Stats, tests)
}

// txBuf is a packet's plain and encrypted forms on their way out. Pooled, not one per
// subscriber: see scratch (downtrack.go).
type txBuf struct {
	plain  [maxPacket + 64]byte
	cipher [maxPacket + 128]byte
}

var txPool = sync.Pool{New: func() any { return new(txBuf) }}

// newDirectTx makes a sub connection's direct path, sending on sock and taking RTCP from
// conn (nil: none, the SFU's socket is not a *net.UDPConn).
func newDirectTx(sock *rawudp.Socket, conn *rxConn, m *Metrics) *directTx {
	t := &directTx{m: m, sock: sock, conn: conn, snd: rawudp.NewSender()}
	t.viaPion.Store(&map[uint32]bool{})
	t.tracks.Store(&map[uint32]*downTrack{})
	if sock == nil {
		t.state.Store(directDisabled)
	}
	return t
}

// configure sets the DTLS hooks on the sub connection's setting engine.
func (t *directTx) configure(se *webrtc.SettingEngine) { t.keys.configure(se) }

// dtlsSecrets is what a connection's DTLS handshake shows of its keying material, where the
// SFU is the DTLS server: the key log line and the ServerHello it sends. The direct send
// path (sub connections) and the direct receive path (pub connections, directrx.go) each
// have their own.
type dtlsSecrets struct {
	mu           sync.Mutex // the handshake's secrets, until the keys are derived
	clientRandom []byte
	masterSecret []byte
	serverRandom []byte
	suite        uint16
	profile      srtp.ProtectionProfile
	serverHello  bool
	keys         *srtp.Config // derived from the above, which are then cleared
}

// configure sets the DTLS hooks on a connection's setting engine.
func (k *dtlsSecrets) configure(se *webrtc.SettingEngine) {
	se.SetDTLSKeyLogWriter(keyLog{k})
	se.SetDTLSServerHelloMessageHook(func(m handshake.MessageServerHello) handshake.Message {
		k.onServerHello(&m)
		return &m
	})
}

// attach gives the direct path its connection, once made.
func (t *directTx) attach(pc *webrtc.PeerConnection) {
	d := pc.SCTP().Transport()
	t.dtls.Store(d)
	d.OnStateChange(func(s webrtc.DTLSTransportState) {
		if s == webrtc.DTLSTransportStateClosed || s == webrtc.DTLSTransportStateFailed {
			t.close()
		}
	})
	d.ICETransport().OnSelectedCandidatePairChange(t.setRemote)
}

// close ends the path: nothing more is sent or taken.
func (t *directTx) close() {
	t.state.Store(directClosed)
	t.route()
}

// setRemote follows the selected candidate pair. A remote candidate whose address is not
// an IP (an mDNS name, which the SFU does not resolve) leaves the last address.
func (t *directTx) setRemote(p *webrtc.ICECandidatePair) {
	if p == nil || p.Remote == nil {
		return
	}
	if a, err := netip.ParseAddr(p.Remote.Address); err == nil {
		ap := netip.AddrPortFrom(a.Unmap(), p.Remote.Port)
		t.remote.Store(&ap)
		t.route()
	}
}

// route points the socket reader's RTCP route at the path's current remote address while
// the path is ready and takes RTCP, and removes it otherwise. The socket reader calls it
// too (rtcpOff): it waits for nothing but the routes' short locks.
func (t *directTx) route() {
	if t.conn == nil {
		return
	}
	t.routeMu.Lock()
	defer t.routeMu.Unlock()
	var to netip.AddrPort
	if r := t.remote.Load(); r != nil && t.state.Load() == directReady && t.rctx != nil && !t.rtcpOff.Load() {
		to = *r
	}
	if to == t.routed {
		return
	}
	t.conn.routeRTCP(to, t.routed, t)
	t.routed = to
}

// keyLog receives the handshake's key-log line (NSS format: CLIENT_RANDOM, the client
// random and the master secret in hex).
type keyLog struct{ k *dtlsSecrets }

func (k keyLog) Write(b []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) != 3 || string(f[0]) != "CLIENT_RANDOM" {
			continue
		}
		cr, err1 := hex.DecodeString(string(f[1]))
		ms, err2 := hex.DecodeString(string(f[2]))
		if err1 != nil || err2 != nil {
			continue
		}
		k.k.mu.Lock()
		k.k.clientRandom, k.k.masterSecret = cr, ms
		k.k.mu.Unlock()
	}
	return len(b), nil
}

func (k *dtlsSecrets) onServerHello(m *handshake.MessageServerHello) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := m.Random.MarshalFixed()
	k.serverRandom = r[:]
	k.serverHello = true
	if m.CipherSuiteID != nil {
		k.suite = *m.CipherSuiteID
	}
	k.profile = 0
	for _, e := range m.Extensions {
		if u, ok := e.(*extension.UseSRTP); ok && len(u.ProtectionProfiles) == 1 {
			k.profile = srtpProfile(u.ProtectionProfiles[0])
		}
	}
}

func srtpProfile(p extension.SRTPProtectionProfile) srtp.ProtectionProfile {
	switch p {
	case extension.SRTP_AES128_CM_HMAC_SHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80
	case extension.SRTP_AES128_CM_HMAC_SHA1_32:
		return srtp.ProtectionProfileAes128CmHmacSha1_32
	case extension.SRTP_AEAD_AES_128_GCM:
		return srtp.ProtectionProfileAeadAes128Gcm
	case extension.SRTP_AEAD_AES_256_GCM:
		return srtp.ProtectionProfileAeadAes256Gcm
	}
	return 0
}

// prfHash is the TLS 1.2 PRF's hash of a cipher suite (those pion's DTLS offers).
func prfHash(suite uint16) func() hash.Hash {
	switch suite {
	case 0xc02b, 0xc02f, 0xc009, 0xc013, 0xc00a, 0xc014: // ECDHE_{ECDSA,RSA} AES_128_GCM_SHA256, AES_{128,256}_CBC_SHA
		return sha256.New
	case 0xc02c, 0xc030: // ECDHE_{ECDSA,RSA} AES_256_GCM_SHA384
		return sha512.New384
	}
	return nil
}

// exporter is the DTLS keying material exporter of the handshake seen (the SFU the server).
type exporter struct {
	master, clientRandom, serverRandom []byte
	hash                               func() hash.Hash
}

func (e exporter) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	if len(context) != 0 {
		return nil, errors.New("sfu: exporter context not supported")
	}
	seed := append(append([]byte(label), e.clientRandom...), e.serverRandom...)
	return prf.PHash(e.master, seed, length, e.hash)
}

// ready reports whether a packet may go directly, making the SRTP context the first time
// it can: when the DTLS transport is connected (pion's SRTP is up then too).
func (t *directTx) ready() bool {
	switch t.state.Load() {
	case directReady:
		return true
	case directDisabled, directClosed:
		return false
	}
	d := t.dtls.Load()
	if d == nil || d.State() != webrtc.DTLSTransportStateConnected {
		return false
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if s := t.state.Load(); s != directUnknown {
		return s == directReady
	}
	if t.remote.Load() == nil {
		// The pair's change is reported from pion's ICE goroutine and may come after
		// the handshake on a busy server: ask for it.
		if p, err := d.ICETransport().GetSelectedCandidatePair(); err == nil {
			t.setRemote(p)
		}
	}
	ctx, err := t.makeContext()
	if err != nil || t.remote.Load() == nil {
		t.state.Store(directDisabled)
		t.m.sendPath.WithLabelValues("pion").Inc()
		return false
	}
	t.ctx = ctx
	if t.conn != nil {
		// The subscriber's RTCP: pion's SRTCP replay window. Without it, pion's path
		// reads it all.
		if t.rctx, err = t.keys.context(&t.cryptex, true, srtp.SRTCPReplayProtection(rtcpReplayWindow)); err != nil {
			t.rctx = nil
		}
	}
	t.state.Store(directReady)
	t.m.sendPath.WithLabelValues("direct").Inc()
	if t.rctx != nil {
		t.route()
	}
	return true
}

// reportsDirect reports whether the sender reports go by this path: it is up, and none
// went through pion's SRTCP context before (the reports' SRTCP index, per sender SSRC,
// must come from one context; a report through pion happens only before the path is up).
func (t *directTx) reportsDirect() bool { return !t.reportsByPion.Load() && t.ready() }

// writeRTCP encrypts a compound RTCP packet of ours (sender reports) and sends it to the
// subscriber: no hand-off to pion's SRTCP session, ICE connection and UDP mux, and no
// system call the scheduler is told about (decision 52).
func (t *directTx) writeRTCP(plain []byte) error {
	remote := t.remote.Load()
	t.wmu.Lock()
	defer t.wmu.Unlock()
	buf := txPool.Get().(*txBuf)
	defer txPool.Put(buf)
	if len(plain) > maxPacket {
		return errors.New("sfu: RTCP packet too large")
	}
	out, err := t.ctx.EncryptRTCP(buf.cipher[:0], plain, nil)
	if err != nil {
		return err
	}
	return t.snd.Send(t.sock, out, *remote)
}

// rtcpReplayWindow is pion's SRTCP session's replay window, which the path keeps.
const rtcpReplayWindow = 64

// takeRTCP decrypts an RTCP datagram from the subscriber and acts on it; false leaves it
// to pion. Called by the socket reader only.
func (t *directTx) takeRTCP(b []byte) bool {
	if t.state.Load() != directReady || t.rctx == nil {
		return false
	}
	if len(b) > maxPacket {
		return false // no RTCP packet of ours is this large: pion's to judge
	}
	buf := rxPool.Get().(*rxBuf)
	defer rxPool.Put(buf)
	out, err := t.rctx.DecryptRTCP(buf.b[:0], b, &t.rhdr)
	if err != nil {
		if !errors.Is(err, srtp.ErrFailedToVerifyAuthTag) {
			return true // a replay, or malformed: pion would drop it too
		}
		// Not the subscriber's (a forgery, or another connection's peer behind the
		// same address after a change): pion decides. Persistent failures end the route.
		if t.rfails++; t.rfails == rxFailLimit {
			t.rtcpOff.Store(true)
			t.route()
		}
		return false
	}
	t.rfails = 0
	t.rtcpIn.Add(1)
	t.raw, err = rtcp.AppendRawPackets(t.raw[:0], out)
	if err != nil {
		return true
	}
	for _, pkt := range t.raw {
		handleRTCP(pkt, t.track, t.m)
	}
	return true
}

// track is the down track bound to ssrc on this connection, if any.
func (t *directTx) track(ssrc uint32) *downTrack { return (*t.tracks.Load())[ssrc] }

// bindTrack and unbindTrack follow the down tracks pion binds to the connection.
func (t *directTx) bindTrack(ssrc uint32, d *downTrack) {
	t.tracksMu.Lock()
	defer t.tracksMu.Unlock()
	editMap(&t.tracks, func(m map[uint32]*downTrack) { m[ssrc] = d })
}

func (t *directTx) unbindTrack(ssrc uint32, d *downTrack) {
	t.tracksMu.Lock()
	defer t.tracksMu.Unlock()
	if (*t.tracks.Load())[ssrc] == d {
		editMap(&t.tracks, func(m map[uint32]*downTrack) { delete(m, ssrc) })
	}
}

var errNoDirect = errors.New("sfu: no direct path (not the DTLS server, or unknown suite or profile)")

func (t *directTx) makeContext() (*srtp.Context, error) {
	return t.keys.context(&t.cryptex, false)
}

// context makes the SRTP context of one direction of the handshake seen, once the
// negotiation's cryptex mode c is known: the SFU's own (remote false, to encrypt) or the
// peer's (remote true, to decrypt), with opts added.
func (k *dtlsSecrets) context(c *cryptexMode, remote bool, opts ...srtp.ContextOption) (*srtp.Context, error) {
	copts, err := c.options()
	if err != nil {
		return nil, err
	}
	cfg, err := k.derive()
	if err != nil {
		return nil, err
	}
	key, salt := cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt
	if remote {
		key, salt = cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt
	}
	return srtp.CreateContext(key, salt, cfg.Profile, append(copts, opts...)...)
}

// cryptexMode is whether a direct path's SRTP context uses RFC 9335 header extension
// encryption as pion's does for the same direction: pion sends it where the peer's
// description says a=cryptex and accepts it where ours does. It is taken from the first
// negotiation (set before the description is applied, so it is known when DTLS is up); a
// later renegotiation that changes it is not followed (browsers do not).
type cryptexMode struct{ v atomic.Int32 } // 0 unknown (the zero value), else srtp.CryptexMode + 1

// set records the mode of a description's text the first time.
func (c *cryptexMode) set(sdpText string) {
	c.v.CompareAndSwap(0, int32(sdpCryptex(sdpText))+1)
}

func (c *cryptexMode) options() ([]srtp.ContextOption, error) {
	switch m := c.v.Load(); m {
	case 0:
		return nil, errNoCryptexMode
	case int32(srtp.CryptexModeDisabled) + 1:
		return nil, nil
	default:
		return []srtp.ContextOption{srtp.Cryptex(srtp.CryptexMode(m - 1))}, nil
	}
}

var errNoCryptexMode = errors.New("sfu: no negotiation seen for the direct path")

// sdpCryptex is the cryptex mode a description declares: a=cryptex at the session level or
// on every media section in use (pion refuses a mixture).
func sdpCryptex(text string) srtp.CryptexMode {
	var d sdp.SessionDescription
	if d.UnmarshalString(text) != nil {
		return srtp.CryptexModeDisabled
	}
	if _, ok := d.Attribute(sdp.AttrKeyCryptex); ok {
		return srtp.CryptexModeEnabled
	}
	some, all := false, true
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Port.Value == 0 || (m.MediaName.Media != "audio" && m.MediaName.Media != "video") {
			continue
		}
		_, ok := m.Attribute(sdp.AttrKeyCryptex)
		some, all = some || ok, all && ok
	}
	if some && all {
		return srtp.CryptexModeEnabled
	}
	return srtp.CryptexModeDisabled
}

// derive gives the SRTP keys of the handshake seen (the SFU the server: "local" are the
// SFU's, "remote" the peer's). The master secret is cleared once they are derived; the
// keys are kept for a second context (the direct send path makes one to encrypt its
// media and one to decrypt the subscriber's RTCP), as pion's SRTP sessions keep theirs.
func (k *dtlsSecrets) derive() (srtp.Config, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys != nil {
		return *k.keys, nil
	}
	h := prfHash(k.suite)
	if !k.serverHello || h == nil || k.profile == 0 || len(k.masterSecret) == 0 || len(k.clientRandom) != 32 {
		return srtp.Config{}, errNoDirect
	}
	cfg := srtp.Config{Profile: k.profile}
	e := exporter{master: k.masterSecret, clientRandom: k.clientRandom, serverRandom: k.serverRandom, hash: h}
	if err := cfg.ExtractSessionKeysFromDTLS(e, false); err != nil {
		return srtp.Config{}, err
	}
	// The secrets are not needed again.
	clear(k.masterSecret)
	k.masterSecret = nil
	k.keys = &cfg
	return cfg, nil
}

// write encrypts one packet and sends it to the subscriber: at once, or (f not nil) in
// the fan-out's batch, which its reader sends with one system call (decision 56).
func (t *directTx) write(h *rtp.Header, payload []byte, f *fanout) (int, error) {
	remote := t.remote.Load()
	t.wmu.Lock()
	defer t.wmu.Unlock()
	buf := txPool.Get().(*txBuf)
	n, err := h.MarshalTo(buf.plain[:])
	if err == nil && n+len(payload) > len(buf.plain) {
		err = errors.New("sfu: packet too large")
	}
	var out []byte
	if err == nil {
		n += copy(buf.plain[n:], payload)
		out, err = t.ctx.EncryptRTP(buf.cipher[:0], buf.plain[:n], h)
	}
	if err != nil {
		txPool.Put(buf)
		return 0, err
	}
	if f != nil && f.add(t.sock, buf, out, *remote) {
		t.sent.Add(1)
		return len(payload), nil // the batch gives buf back
	}
	err = t.snd.Send(t.sock, out, *remote)
	txPool.Put(buf)
	if err != nil {
		return 0, err
	}
	t.sent.Add(1)
	return len(payload), nil
}

// fanout is a layer reader's batch of direct writes (design decision 56): the packets one
// incoming packet becomes for its subscribers, encrypted by their paths and sent with
// one sendmmsg(2) when the reader has delivered it to everyone (or the batch is full),
// instead of a system call each. Each down track's packets keep their order (a down
// track gets at most one packet of a reader's batch, and the reader flushes before its
// next); a datagram the kernel refuses is counted as a write error, as before. The
// packet's record in the estimator and the sender report's counts are made when it is
// encrypted, a fraction of a millisecond before it leaves.
type fanout struct {
	snd  *rawudp.BatchSender
	sock *rawudp.Socket
	bufs [fanoutBatch]*txBuf
	m    *Metrics
}

// fanoutBatch is the most datagrams one system call of a fan-out sends.
const fanoutBatch = 64

func newFanout(m *Metrics) *fanout {
	return &fanout{snd: rawudp.NewBatchSender(fanoutBatch), m: m}
}

// add puts a packet encrypted in buf (out) into the batch, sending what is there first
// when it is full or was for another socket; false when the batch cannot hold it (the
// caller sends it and keeps buf).
func (f *fanout) add(sock *rawudp.Socket, buf *txBuf, out []byte, to netip.AddrPort) bool {
	if f.snd.Full() || (f.sock != sock && f.snd.Len() > 0) {
		f.flush()
	}
	i := f.snd.Len()
	if !f.snd.Add(sock, out, to) {
		return false
	}
	f.sock, f.bufs[i] = sock, buf
	return true
}

// flush sends the batch and gives its buffers back.
func (f *fanout) flush() {
	n := f.snd.Len()
	if n == 0 {
		return
	}
	if failed, _ := f.snd.Flush(f.sock); failed > 0 {
		f.m.dropWriteError.Add(float64(failed))
	}
	for i := range n {
		txPool.Put(f.bufs[i])
		f.bufs[i] = nil
	}
}

// takes reports whether a packet of stream ssrc goes by this path: it is ready and the
// stream has not gone through pion's.
func (t *directTx) takes(ssrc uint32) bool {
	if m := *t.viaPion.Load(); len(m) != 0 && m[ssrc] {
		return false
	}
	return t.ready()
}

// leftToPion records that a packet of stream ssrc went through pion's SRTP.
func (t *directTx) leftToPion(ssrc uint32) {
	t.pionMu.Lock()
	defer t.pionMu.Unlock()
	if !(*t.viaPion.Load())[ssrc] {
		editMap(&t.viaPion, func(m map[uint32]bool) { m[ssrc] = true })
	}
}

// directInterceptor puts a connection's directTx under its interceptors (registered
// first: innermost). The down tracks write to the path themselves when it takes their
// stream (downTrack.writeRTP); what comes down pion's chain is what it did not take.
type directInterceptor struct {
	interceptor.NoOp
	t *directTx
}

func (i *directInterceptor) NewInterceptor(string) (interceptor.Interceptor, error) { return i, nil }

func (i *directInterceptor) BindLocalStream(info *interceptor.StreamInfo, next interceptor.RTPWriter) interceptor.RTPWriter {
	ssrc := info.SSRC
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if i.t.takes(ssrc) {
			return i.t.write(h, payload, nil)
		}
		if i.t.state.Load() == directClosed {
			return 0, io.ErrClosedPipe
		}
		// pion's SRTP writer drops a packet (0, nil) until its session is up; a packet it
		// wrote went through its context, whose rollover counter is now the stream's.
		n, err := next.Write(h, payload, a)
		if n > 0 {
			i.t.leftToPion(ssrc)
		}
		return n, err
	})
}
