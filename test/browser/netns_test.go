//go:build browser && netns

// Network tests: real browsers on hosts that cannot reach each other, as
// shared/NETWORK-TESTING.md describes. Three network namespaces per test: the server's (R),
// the patient's (A) and the clinician's (B), A and B each joined to R by a veth pair and R not
// forwarding, so A and B have no route to each other and both reach the server. Addresses
// are from the benchmarking range 198.18.0.0/15, which the relay's peer policy denies unless
// allow-listed (these tests allow it). Traffic goes only to these namespaces.
//
//	make netns   (as root: go test -tags browser,netns -run Netns ./test/browser)
package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/sys/unix"

	"github.com/bedside/bedside/internal/app"
	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/config"
)

const (
	serverIP  = "198.18.1.1" // R, on A's side (B reaches it through R too)
	patientIP = "198.18.1.2" // A
	clinIP    = "198.18.2.2" // B
)

var netSeq atomic.Int32

// network is the three namespaces of one test.
type network struct {
	t             testing.TB
	r, a, b       string // namespace names, unique to this process and test
	serverThread  *nsThread
	patientExec   string // wrappers that start Chromium inside A and B
	clinicianExec string
}

// newNetwork makes the namespaces and removes them in t.Cleanup, whatever happens.
func newNetwork(t testing.TB) *network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network-namespace tests need root (ip netns); run them with make netns as root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make deps installs iproute2 and nftables): %v", tool, err)
		}
	}
	id := fmt.Sprintf("%d-%d", os.Getpid(), netSeq.Add(1))
	n := &network{t: t, r: "bsd-r-" + id, a: "bsd-a-" + id, b: "bsd-b-" + id}
	t.Cleanup(func() {
		for _, ns := range []string{n.a, n.b, n.r} {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		}
	})
	for _, ns := range []string{n.r, n.a, n.b} {
		n.ip("netns", "add", ns)
		n.ip("-n", ns, "link", "set", "lo", "up")
		// IPv4 only, so ICE stays on the paths under test.
		n.in(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	}
	n.in(n.r, "sysctl", "-qw", "net.ipv4.ip_forward=0") // no route between A and B
	for _, side := range []struct{ ns, peer, hostIP, routerIP string }{
		{n.a, "toa", patientIP, serverIP},
		{n.b, "tob", clinIP, "198.18.2.1"},
	} {
		n.ip("-n", side.ns, "link", "add", "eth0", "type", "veth", "peer", "name", side.peer, "netns", n.r)
		n.ip("-n", side.ns, "addr", "add", side.hostIP+"/24", "dev", "eth0")
		n.ip("-n", side.ns, "link", "set", "eth0", "up")
		n.ip("-n", n.r, "addr", "add", side.routerIP+"/24", "dev", side.peer)
		n.ip("-n", n.r, "link", "set", side.peer, "up")
		n.ip("-n", side.ns, "route", "add", "default", "via", side.routerIP)
	}
	n.serverThread = enterNetns(t, n.r)
	dir := t.TempDir()
	n.patientExec = chromiumIn(t, dir, n.a)
	n.clinicianExec = chromiumIn(t, dir, n.b)
	return n
}

func (n *network) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs a command inside a namespace.
func (n *network) in(ns string, args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput(); err != nil {
		n.t.Fatalf("in %s: %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
}

// blockUDP drops every UDP datagram into or out of the patient's host (a network that
// allows only TCP, like a hospital guest network).
func (n *network) blockUDP() {
	n.drop(n.a, "bsdblock", "meta l4proto udp", "meta l4proto udp")
}

// drop makes a table in ns that drops the packets out of it matching out and into it
// matching in (nft expressions), until the returned function deletes it.
func (n *network) drop(ns, table, out, in string) (restore func()) {
	n.t.Helper()
	n.in(ns, "nft", "add table inet "+table+"; "+
		"add chain inet "+table+" out { type filter hook output priority 0; policy accept; }; "+
		"add chain inet "+table+" in { type filter hook input priority 0; policy accept; }; "+
		"add rule inet "+table+" out "+out+" drop; "+
		"add rule inet "+table+" in "+in+" drop")
	return func() { n.in(ns, "nft", "delete table inet "+table) }
}

// chromiumIn writes a wrapper that starts Chromium inside ns, for chromedp's ExecPath
// (chromedp talks to it over a pipe, which crosses namespaces).
func chromiumIn(t testing.TB, dir, ns string) string {
	p := filepath.Join(dir, "chromium-"+ns)
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns, chromiumPath)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// nsThread is a goroutine locked to an OS thread inside a namespace: sockets it makes live
// there. It is never unlocked, so the thread ends with it and never runs other goroutines.
type nsThread struct {
	jobs chan func()
	done chan struct{}
}

func enterNetns(t testing.TB, ns string) *nsThread {
	t.Helper()
	th := &nsThread{jobs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(th.done)
		runtime.LockOSThread()
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		ready <- err
		if err != nil {
			return
		}
		for f := range th.jobs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("enter namespace %s: %v", ns, err)
	}
	t.Cleanup(func() { close(th.jobs); <-th.done })
	return th
}

// Do runs f on the namespace's thread and waits for it.
func (th *nsThread) Do(f func()) {
	done := make(chan struct{})
	th.jobs <- func() { defer close(done); f() }
	<-done
}

// startNetServer starts the server inside R (its listeners and every relay socket are made
// there) on the server address, the relay allowed to send to this test's hosts; tweak
// changes the configuration further.
func startNetServer(t testing.TB, n *network, tweak func(*config.Config)) *apptest.Server {
	t.Helper()
	var srv *apptest.Server
	n.serverThread.Do(func() {
		srv = apptest.Start(t, apptest.Options{
			HTTPAddr: serverIP + ":0",
			App:      app.Options{TURNSockets: n.serverThread.Do},
			Config: func(c *config.Config) {
				c.PublicURL = "http://" + serverIP + ":0" // the port bound
				c.STUNAddr = serverIP + ":0"
				c.ICEHost = serverIP
				c.TURNAllowPeers = "198.18.0.0/15"
				if tweak != nil {
					tweak(c)
				}
			},
		})
	})
	if srv == nil {
		t.FailNow()
	}
	return srv
}

// netRig starts the server inside R and the two browsers in A and B, and returns the usual
// rig.
func netRig(t testing.TB, n *network, turnMode string) *rig {
	t.Helper()
	// The pages come from a plain-http address that is not localhost: tell Chromium to treat
	// it as secure (camera access). The port is known only once the server runs, so the
	// browsers start after it.
	srv := startNetServer(t, n, func(c *config.Config) { c.TURN = turnMode })
	secure := chromedp.Flag("unsafely-treat-insecure-origin-as-secure", srv.URL())
	return newRigWith(t, rigOptions{
		start:     func(testing.TB) *apptest.Server { return srv },
		clinician: []chromedp.ExecAllocatorOption{chromedp.ExecPath(n.clinicianExec), secure},
		patient:   []chromedp.ExecAllocatorOption{chromedp.ExecPath(n.patientExec), secure},
	})
}

// selectedPairJS is the page's selected candidate pair, as the connection message reports it.
const selectedPairJS = `(async () => {
	const pc = [...window.bedside.call.pcs.values()][0];
	if (!pc || pc.connectionState !== 'connected') return null;
	const report = await pc.getStats();
	const byId = new Map();
	report.forEach((v) => byId.set(v.id, v));
	for (const v of byId.values()) {
		if (v.type === 'transport' && v.selectedCandidatePairId) {
			const p = byId.get(v.selectedCandidatePairId);
			const l = byId.get(p.localCandidateId), r = byId.get(p.remoteCandidateId);
			return {local: l.candidateType, localProtocol: l.protocol, relayProtocol: l.relayProtocol || '',
				remote: r.candidateType};
		}
	}
	return null;
})()`

type netPair struct {
	Local         string `json:"local"`
	LocalProtocol string `json:"localProtocol"`
	RelayProtocol string `json:"relayProtocol"`
	Remote        string `json:"remote"`
}

func pairOf(p *page) netPair {
	p.tb.Helper()
	p.waitFor("a selected candidate pair", selectedPairJS+`.then((x) => x !== null)`)
	return mustEval[netPair](p, selectedPairJS)
}

// TestNetnsCallNeedsRelay: the patient and the clinician cannot reach each other; the call
// connects through the embedded relay, both pages' selected pair is relayed, and the
// clinician's visit summary (and the API behind it) says so.
func TestNetnsCallNeedsRelay(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	startCall(r)
	for _, p := range []*page{r.patient, r.clinician} {
		pair := pairOf(p)
		p.logf("selected pair: %+v", pair)
		if pair.Local != "relay" && pair.Remote != "relay" {
			t.Errorf("%s: selected pair %+v is not relayed, on hosts with no route to each other", p.person, pair)
		}
	}
	r.clinician.waitFor("the visit summary saying the patient was relayed", fmt.Sprintf(
		`!!document.querySelector('#visit-summary li[data-participant-id=%q][data-path="relayed"]')`, r.patientID))
	text := mustEval[string](r.clinician, `document.getElementById('visit-summary').textContent`)
	if !strings.Contains(text, "through the relay") {
		t.Errorf("visit summary: %q", text)
	}
	r.patient.assertNoExceptions()
	r.patient.assertNoFailedSignals()
	r.clinician.assertNoExceptions()
	r.clinician.assertNoFailedSignals()
}

// TestNetnsTURNOffFails: with the relay switched off the same visit cannot connect, and both
// people are told so instead of waiting for ever.
func TestNetnsTURNOffFails(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "off")
	patientWaits(r)
	r.admit("Ada")
	r.patient.waitFor("the call stage", visible("stage-call"))
	start := time.Now()
	for _, p := range []*page{r.patient, r.clinician} {
		p.waitForWithin("#connect-error shown", visible("connect-error")+
			` && document.getElementById('call-status').dataset.state === 'error'`, 45*time.Second)
		msg := mustEval[string](p, `document.getElementById('connect-error').textContent`)
		if !strings.Contains(msg, "We could not connect your call") || !strings.Contains(msg, "network") {
			t.Errorf("%s: message %q", p.person, msg)
		}
		p.logf("told the call cannot connect %v after admission: %q", time.Since(start).Round(time.Second), msg)
	}
	if fp := mustEval[bool](r.patient, `window.bedside.call.failedPeers.size > 0`); !fp {
		t.Error("the patient's call has no failed peer")
	}
}

// TestNetnsUDPBlocked: the patient's network drops all UDP; the call connects over TURN/TCP.
// Then the clinician removes the patient mid-call: the relay closes the patient's allocation
// and the packets it relayed stop within 2 s, although the clinician's browser (made to
// ignore the removal here) keeps sending to it.
func TestNetnsUDPBlocked(t *testing.T) {
	n := newNetwork(t)
	n.blockUDP()
	r := netRig(t, n, "embedded")
	startCall(r)
	pair := pairOf(r.patient)
	r.patient.logf("selected pair: %+v", pair)
	if pair.Local != "relay" || (pair.RelayProtocol != "tcp" && pair.RelayProtocol != "tls") {
		t.Fatalf("patient's pair %+v: want a local relay candidate reached over TCP or TLS", pair)
	}
	r.clinician.waitFor("the visit summary saying TURN over TCP", fmt.Sprintf(
		`!!document.querySelector('#visit-summary li[data-participant-id=%q][data-path="relayed"][data-relay-protocol=%q]')`, r.patientID, pair.RelayProtocol))

	// Revocation. The clinician's page keeps its connection (and so keeps sending to the
	// patient's relay address) after the patient is gone.
	relay := r.srv.TURN()
	mustEval[chromedp.Void](r.clinician, `(() => { window.bedside.call._drop = () => {}; })()`)
	// Watch the relay's count of the patient's packets every 10 ms, from a second before the
	// removal: when did it last move?
	type sample struct {
		at time.Time
		n  uint64
	}
	samples := make(chan []sample, 1)
	stopWatch := make(chan struct{})
	go func() {
		var s []sample
		for {
			s = append(s, sample{time.Now(), relay.RelayedPackets(r.patientID)})
			select {
			case <-stopWatch:
				samples <- s
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	time.Sleep(time.Second)
	removeAt := time.Now() // the click (and the confirmation) take some of what follows
	r.clinician.click(fmt.Sprintf(`button.remove-participant[data-peer-id=%q]`, r.patientID))
	time.Sleep(5 * time.Second)
	sentBefore := clinicianPacketsSent(r.clinician)
	time.Sleep(time.Second)
	sentAfter := clinicianPacketsSent(r.clinician)
	close(stopWatch)
	s := <-samples
	var lastMove time.Time
	moves := 0
	for i := 1; i < len(s); i++ {
		if s[i].n != s[i-1].n {
			lastMove = s[i].at
			if s[i].at.Before(removeAt) {
				moves++
			}
		}
	}
	if moves == 0 {
		t.Fatalf("the patient's relay carried nothing in the second before the removal")
	}
	stopped := lastMove.Sub(removeAt)
	t.Logf("the removed patient's relayed packets stopped %v after the click on Remove (%d packets in all)", stopped.Round(time.Millisecond), s[len(s)-1].n)
	if stopped > 2*time.Second {
		t.Errorf("relayed packets went on for %v after the removal, want at most 2 s", stopped)
	}
	if sentAfter <= sentBefore {
		t.Errorf("the clinician's connection stopped sending (%d -> %d): the test shows nothing about the relay", sentBefore, sentAfter)
	}
	r.patient.waitFor("the patient told they were removed", visible("stage-ended"))
}

// clinicianPacketsSent is the RTP packets the page's (first) connection has sent.
func clinicianPacketsSent(p *page) int {
	return mustEval[int](p, `(async () => { const pc = [...window.bedside.call.pcs.values()][0]; if (!pc) return 0;
		const s = await pc.getStats(); let n = 0; s.forEach((v) => { if (v.type === 'outbound-rtp') n += v.packetsSent || 0; }); return n; })()`)
}

// cutSignalling drops the patient's TCP to and from the server's HTTP port (its WebSocket,
// and nothing else: the relayed media is UDP) until the returned function restores it.
func (n *network) cutSignalling(port string) (restore func()) {
	return n.cutSignallingOf(n.a, port)
}

// cutSignallingOf is cutSignalling for the host in namespace ns.
func (n *network) cutSignallingOf(ns, port string) (restore func()) {
	return n.drop(ns, "bsdsig", "ip daddr "+serverIP+" tcp dport "+port, "ip saddr "+serverIP+" tcp sport "+port)
}

// framesDecodedJS is the video frames the page has decoded over all its connections.
const framesDecodedJS = `(async () => { let n = 0;
	for (const pc of window.bedside.call.pcs.values()) {
		(await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0; });
	}
	return n; })()`

// TestNetnsSignallingLost: the patient's path to the server's web port goes dead in the
// middle of a relayed call (packets dropped, no reset: what a tunnel or a NAT that forgot
// the connection does), while the media, on UDP through the relay, goes on. The page
// notices by itself, as TCP would not until it next sent: within 20 s it says it is
// reconnecting, the call going on meanwhile; when the path is back it is in the call again
// within 15 s, on the same peer connection.
func TestNetnsSignallingLost(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	startCall(r)
	port := r.srv.URL()[strings.LastIndex(r.srv.URL(), ":")+1:]
	pc0 := mustEval[string](r.patient, `(() => { window.__pc0 = [...window.bedside.call.pcs.values()][0]; return window.__pc0.connectionState; })()`)
	if pc0 != "connected" {
		t.Fatalf("the patient's connection is %s", pc0)
	}
	restore := n.cutSignalling(port)
	cut := time.Now()
	r.patient.waitForWithin("the page saying it reconnects", `document.getElementById('call-status').dataset.state === 'reconnecting'`, 20*time.Second)
	r.patient.logf("says it is reconnecting %v after its path to the server went dead", time.Since(cut).Round(100*time.Millisecond))
	before := mustEval[int](r.patient, framesDecodedJS)
	time.Sleep(2 * time.Second)
	if after := mustEval[int](r.patient, framesDecodedJS); after < before+20 {
		t.Errorf("the call stopped while signalling was down: %d frames in 2 s", after-before)
	}
	restore()
	back := time.Now()
	r.patient.waitForWithin("the page in the call again", `document.getElementById('call-status').dataset.state === 'in_call' &&
		window.bedside.call.signalling.state === 'open'`, 15*time.Second)
	r.patient.logf("in the call again %v after the path came back", time.Since(back).Round(100*time.Millisecond))
	if same := mustEval[bool](r.patient, `[...window.bedside.call.pcs.values()][0] === window.__pc0 && window.__pc0.connectionState === 'connected'`); !same {
		t.Error("the patient's peer connection was replaced or is down after signalling came back")
	}
	r.patient.assertNoExceptions()
	r.patient.assertNoFailedSignals()
}

// watchSignallingLoss starts recording, in the page, when its signalling next leaves the
// open state (it gave up its socket, or the socket closed), and when the page first probes
// its socket (Signalling.probe, decision 59); signallingLostAfter and probedAfter read them.
func watchSignallingLoss(p *page) {
	mustEval[bool](p, `(() => { window.__signallingLostAt = 0; window.__probedAt = 0; const s = window.bedside.call.signalling;
		s.on('state', (e) => { if (e.state !== 'open' && !window.__signallingLostAt) window.__signallingLostAt = Date.now(); });
		const probe = s.probe.bind(s);
		s.probe = () => { if (!window.__probedAt) window.__probedAt = Date.now(); probe(); };
		return true; })()`)
}

// signallingLostAfter is how long after since (a time of the page's clock, from pageNow)
// the page's signalling left the open state, or 0 if it has not.
func signallingLostAfter(p *page, since int64) time.Duration {
	return pageTimeAfter(p, `window.__signallingLostAt`, since)
}

// probedAfter is how long after since the page first probed its signalling's socket, or 0
// if it has not.
func probedAfter(p *page, since int64) time.Duration {
	return pageTimeAfter(p, `window.__probedAt`, since)
}

func pageTimeAfter(p *page, expr string, since int64) time.Duration {
	at := mustEval[int64](p, expr)
	if at == 0 {
		return 0
	}
	return time.Duration(at-since) * time.Millisecond
}

// assertProbed checks that a page whose address changed gave its dead signalling socket up
// because it probed it (decision 59), not after its next ping went unanswered: its
// connections' ICE goes disconnected about 6 s after the change, the page probes the socket,
// and gives it up when no pong came within PROBE_WAIT_MS (2 s; the page checks every
// second). Without the probe it would wait for its next ping to go unanswered: 12-13 s after
// the change in these tests, 5-6 s or more after the ICE went disconnected. (Until
// 2026-11-28 this asked for the socket given up within 10 s of the change, which a run with
// a core kept busy missed by 9 ms: Chromium's ICE took longer to call the path
// disconnected, the probe then did its work in 2.9 s.)
func assertProbed(t *testing.T, p *page, since int64, lost time.Duration) {
	t.Helper()
	probed := probedAfter(p, since)
	switch {
	case lost <= 0:
		t.Errorf("the patient's page never gave its signalling's dead socket up")
	case probed <= 0 || probed > lost:
		t.Errorf("the patient's page gave its socket up %v after the address changed, without probing it first (probed: %v)", lost, probed)
	case lost-probed > 4*time.Second:
		t.Errorf("the patient's page probed its socket %v after the address changed but gave it up only %v after the probe; want within 4 s (2 s for the pong, a check every second)", probed, lost-probed)
	default:
		t.Logf("the patient's page probed its socket %v after the address changed and gave it up %v later", probed.Round(100*time.Millisecond), (lost - probed).Round(100*time.Millisecond))
	}
}

// pageNow is the page's clock (Date.now()).
func pageNow(p *page) int64 { return mustEval[int64](p, `Date.now()`) }

// changeAddress moves the patient's host to another address on its network (a laptop on
// another Wi-Fi, a phone on mobile data).
func (n *network) changeAddress(newIP string) {
	n.t.Helper()
	n.ip("-n", n.a, "addr", "del", patientIP+"/24", "dev", "eth0")
	n.ip("-n", n.a, "addr", "add", newIP+"/24", "dev", "eth0")
	n.ip("-n", n.a, "route", "add", "default", "via", serverIP)
}

// TestNetnsClinicianClicksNotLost: the clinician's path to the web port goes dead (no
// reset) just before they admit the waiting patient, and again before they remove the
// patient from the call: each click went into a dead socket that the page did not yet know
// was dead. Each time the path comes back only after the server has given the old socket
// up (so nothing sent on it can still arrive), and without the clinician clicking again the
// patient is admitted (the call connects), and later removed.
func TestNetnsClinicianClicksNotLost(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	patientWaits(r)
	port := r.srv.URL()[strings.LastIndex(r.srv.URL(), ":")+1:]
	c := r.clinician
	c.waitFor("Ada in #waiting", `document.querySelectorAll('#waiting li[data-participant-id]').length === 1`)
	if _, members := r.srv.Visits().LiveCounts(); members != 2 {
		t.Fatalf("%d members connected before the cut, want 2", members)
	}

	// cutThenClick cuts the clinician's path, clicks, waits for the page to reconnect and the
	// server to drop the old socket (it pings every 5 s and gives up 10 s after an
	// unanswered one), and restores the path.
	cutThenClick := func(what, sel string) {
		t.Helper()
		restore := n.cutSignallingOf(n.b, port)
		c.click(sel)
		c.waitForWithin("the page saying it reconnects after "+what, `document.getElementById('call-status').dataset.state === 'reconnecting'`, 20*time.Second)
		waitMembers(t, r, 1, restore)
		restore()
	}

	patientLi := `#waiting li[data-participant-id] button.admit`
	cutThenClick("Admit", patientLi)
	back := time.Now()
	waitInCall(r.patient)
	waitInCall(r.clinician)
	c.logf("the patient admitted and in the call %v after the path came back", time.Since(back).Round(100*time.Millisecond))
	r.patientID = mustEval[string](c, `[...window.bedside.call.peers.keys()][0]`)

	cutThenClick("Remove", fmt.Sprintf(`#remotes .remove-participant[data-peer-id=%q]`, r.patientID))
	back = time.Now()
	r.patient.waitForWithin("the patient told they were removed", visible("stage-ended")+` &&
		document.getElementById('ended').textContent.includes('removed')`, 30*time.Second)
	c.logf("the patient removed %v after the path came back", time.Since(back).Round(100*time.Millisecond))
	p, err := r.srv.Store().ParticipantByID(context.Background(), r.patientID)
	if err != nil || p.RemovedAt == nil {
		t.Fatalf("participant after removal: %+v, %v", p, err)
	}
	for _, pg := range []*page{r.clinician, r.patient} {
		pg.assertNoExceptions()
		pg.assertNoFailedSignals()
	}
}

// waitMembers waits up to 30 s for the server to have n members connected (to have given
// up a dead socket, which takes it up to 15 s); restore runs before a failure.
func waitMembers(t *testing.T, r *rig, n int, restore func()) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, members := r.srv.Visits().LiveCounts(); members == n {
			return
		}
		if time.Now().After(deadline) {
			restore()
			_, members := r.srv.Visits().LiveCounts()
			t.Fatalf("%d members connected 30 s after the cut, want %d (the dead socket given up)", members, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestNetnsPatientLeaveNotLost: the patient's path to the web port goes dead (no reset) and
// the patient clicks Leave before the page can know: the leave went into a dead socket. The
// page says at once that they left, camera off. When the path is back (after the server has
// given the old socket up, so that nothing on it can still arrive), the clinician's page
// sees the patient leave (not only "connection lost"), and the visit records it.
func TestNetnsPatientLeaveNotLost(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	startCall(r)
	port := r.srv.URL()[strings.LastIndex(r.srv.URL(), ":")+1:]
	restore := n.cutSignalling(port)
	r.patient.click("#leave")
	r.patient.waitFor("the page saying they left, camera off", visible("stage-ended")+` && !document.getElementById('rejoin').hidden &&
		!document.querySelector('video')?.srcObject`)
	waitMembers(t, r, 1, restore)
	present := fmt.Sprintf(`window.bedside.call.peers.has(%q)`, r.patientID)
	if !mustEval[bool](r.clinician, present) {
		t.Fatal("the clinician's page forgot the patient before the leave could arrive")
	}
	restore()
	back := time.Now()
	r.clinician.waitForWithin("the patient gone from the clinician's page (left, not lost)", `!`+present, 45*time.Second)
	r.clinician.logf("the patient's leave arrived %v after the path came back", time.Since(back).Round(100*time.Millisecond))
	p, err := r.srv.Store().ParticipantByID(context.Background(), r.patientID)
	if err != nil || p.LeftAt == nil {
		t.Fatalf("participant after the leave: %+v, %v", p, err)
	}
	// The page did not go back into the call on its reconnect.
	if !mustEval[bool](r.patient, visible("stage-ended")) {
		t.Error("the patient's page left the ended stage when its leave went through")
	}
	for _, pg := range []*page{r.clinician, r.patient} {
		pg.assertNoExceptions()
		pg.assertNoFailedSignals()
	}
}

// TestNetnsAddressChange: in a relayed peer-to-peer visit the patient's host changes its
// address; without a reload each side decodes the other's video again within 30 s.
func TestNetnsAddressChange(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	startCall(r)
	watchSignallingLoss(r.patient)
	moved := pageNow(r.patient)
	n.changeAddress("198.18.1.3")
	videoAgain(t, []*page{r.patient, r.clinician}, "the patient's address changed", 30*time.Second)
	lost := signallingLostAfter(r.patient, moved)
	r.patient.logf("gave its signalling's socket up %v after the address changed", lost.Round(100*time.Millisecond))
	assertProbed(t, r.patient, moved, lost)
	pages := []*page{r.patient, r.clinician}
	for _, p := range pages {
		p.assertNoExceptions()
		p.assertNoFailedSignals()
	}
}

// videoAgain waits until each page decodes video again (10 frames more in a second, counted
// over a second so that a connection replaced in between does not count backwards), at
// most within from now, and logs when.
func videoAgain(t *testing.T, pages []*page, after string, within time.Duration) {
	t.Helper()
	since := time.Now()
	last := map[*page]int{}
	for _, p := range pages {
		last[p] = mustEval[int](p, framesDecodedJS)
	}
	for done := map[*page]bool{}; len(done) < len(pages); {
		time.Sleep(time.Second)
		for _, p := range pages {
			if done[p] {
				continue
			}
			got := mustEval[int](p, framesDecodedJS)
			if got-last[p] >= 10 {
				done[p] = true
				p.logf("decodes the other's video again %v after %s", time.Since(since).Round(100*time.Millisecond), after)
			}
			last[p] = got
		}
		if len(done) < len(pages) && time.Since(since) > within {
			t.Fatalf("%v after %s: video again on %d of %d pages", within, after, len(done), len(pages))
		}
	}
}

// TestNetnsServerRestart: the server restarts (an upgrade) in the middle of a relayed call.
// The relay was in the server's process: its allocations and, with no secret configured,
// the credentials that made them are gone. Without a reload both pages decode the other's
// video again within seconds, through the restarted relay, and their signalling is back.
func TestNetnsServerRestart(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	startCall(r)
	restartAt := time.Now().UTC()
	n.serverThread.Do(func() { r.srv.Restart(t) })
	pages := []*page{r.patient, r.clinician}
	// Within 8 s: the pages restart ICE when their signalling is back (about 2 s), not when
	// the browser finds the relayed path gone (10 s).
	videoAgain(t, pages, "the server restarted", 8*time.Second)
	for _, p := range pages {
		p.waitFor("signalling open again", `window.bedside.call.signalling.state === 'open'`)
		if pair := pairOf(p); pair.Local != "relay" && pair.Remote != "relay" {
			t.Errorf("%s: pair %+v after the restart: want the relay", p.person, pair)
		}
		p.assertNoExceptions()
		p.assertNoFailedSignals()
	}
	// The audit trail goes on across the restart: it verifies whole, and the restarted
	// relay's allocation for the call is in it.
	ctx := context.Background()
	if rep, err := audit.Verify(ctx, r.srv.Store(), nil); err != nil || !rep.OK() {
		t.Errorf("the trail does not verify after the restart: %+v %v", rep, err)
	}
	allocs, err := r.srv.Store().SearchAudit(ctx, audit.Query{Action: audit.TURNAllocate, From: restartAt})
	if err != nil {
		t.Fatal(err)
	}
	ours := 0
	for _, a := range allocs {
		if a.ActorID == r.patientID {
			ours++
			if a.VisitID != r.visitID {
				t.Errorf("the patient's relay allocation names visit %q, want %q", a.VisitID, r.visitID)
			}
		}
	}
	if ours == 0 {
		t.Errorf("no relay allocation of the patient's recorded after the restart (%d of others)", len(allocs))
	}
}

// TestNetnsNetworkDrop: in a relayed 1:1 call the patient's network goes away for 40 s
// (every packet dropped, the WebSocket's too: longer than ICE's consent and the server's
// wait for the WebSocket) and comes back. Without a reload, both pages decode the other's
// video again within 15 s, and the patient's signalling is open again.
func TestNetnsNetworkDrop(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	startCall(r)
	restore := n.cutOff(n.a)
	time.Sleep(40 * time.Second)
	restore()
	pages := []*page{r.patient, r.clinician}
	videoAgain(t, pages, "the patient's network came back", 15*time.Second)
	r.patient.waitFor("signalling open again", `window.bedside.call.signalling.state === 'open'`)
	for _, p := range pages {
		p.assertNoExceptions()
		p.assertNoFailedSignals()
	}
}
