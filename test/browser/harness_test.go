//go:build browser

// Package browser holds Bedside's real-browser end-to-end tests: a headless Chromium per
// person (Debian's chromium, driven by chromedp over the DevTools protocol), fake camera and
// microphone, asserting on what a user would notice and on getStats().
//
//	go test -tags browser -count=1 ./test/browser/...
//
// The recipe (binary, flags, loopback ICE) is the one shared/BROWSERS.md describes.
package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium binary itself: the /usr/bin/chromium wrapper is slower
// and prints noise.
const chromiumPath = "/usr/lib/chromium/chromium"

const (
	// waitTimeout bounds each wait for something a user would see. Generous: the machines
	// are shared and have two cores; a healthy run needs a fraction of it.
	waitTimeout = 25 * time.Second
	// stepTimeout bounds one DevTools command (a click, an evaluation, a navigation).
	stepTimeout = 20 * time.Second
	pollEvery   = 50 * time.Millisecond
)

// page is one person's browser: a Chromium process of its own, with a fresh profile, and its
// one tab. Everything it starts is stopped in the test's cleanup.
type page struct {
	tb     testing.TB
	person string
	ctx    context.Context // the tab; never give it a deadline (that would stop the browser)
	dir    string          // --user-data-dir, unique to this browser

	mu         sync.Mutex
	done       bool     // the test is over: log nothing more
	exceptions []string // uncaught exceptions, for assertNoExceptions
	failedSigs []string // descriptions the page could not apply, for assertNoFailedSignals
	quietLines []string // console lines not logged at once (benchmarks), shown on failure
	output     bytes.Buffer
}

// baseFlags are the flags of shared/BROWSERS.md, plus the three that keep timers and
// rendering of a page at full speed when Chromium thinks nobody looks at it.
func baseFlags(dir string) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(dir),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.WindowSize(1280, 900),
	}
}

// newPage starts a Chromium for person. Extra allocator options come after the base flags
// and so override them (chromedp.Flag with the same name replaces the value).
func newPage(tb testing.TB, person string, extra ...chromedp.ExecAllocatorOption) *page {
	tb.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		tb.Fatalf("Chromium is not installed at %s (%v). These tests need Debian's chromium: "+
			"apt-get install chromium", chromiumPath, err)
	}
	p := &page{tb: tb, person: person, dir: tb.TempDir()}
	opts := append(baseFlags(p.dir), extra...)
	opts = append(opts, chromedp.CombinedOutput(&lockedWriter{p: p}))

	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(p.logf))
	p.ctx = ctx

	start := time.Now()
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens its tab
		cancel()
		allocCancel()
		tb.Fatalf("%s: start Chromium: %v\n%s", person, err, p.chromiumOutput())
	}
	var pids []int
	if b := chromedp.FromContext(ctx).Browser; b != nil && b.Process() != nil {
		pids = append(pids, b.Process().Pid)
	}

	// Console messages, exceptions and dialogs, until the cleanup stops them.
	listenCtx, stopListening := context.WithCancel(ctx)
	messages := chromedp.Console(listenCtx)
	dialogs := chromedp.Events(listenCtx, cdppage.JavascriptDialogOpening)
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			p.console(m)
		}
	})
	wg.Go(func() {
		// confirm() on "End visit" and "Leave": a person clicks OK.
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			p.logf("dialog %s %q: accepting", ev.Type, ev.Message)
			_, err := chromedp.Call(listenCtx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{Accept: true})
			if err != nil && listenCtx.Err() == nil {
				p.logf("cannot accept the dialog: %v", err)
			}
		}
	})
	p.logf("Chromium started in %v (pid %v)", time.Since(start).Round(time.Millisecond), pids)

	tb.Cleanup(func() {
		if tb.Failed() {
			p.saveScreenshot()
			p.mu.Lock()
			for _, l := range p.quietLines {
				tb.Logf("[%s] %s", p.person, l)
			}
			p.mu.Unlock()
		}
		stopListening()
		wg.Wait()
		// Close the browser politely, then make sure of it.
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
			tb.Logf("[%s] closing Chromium: %v", p.person, err)
		}
		ccancel()
		cancel()
		allocCancel()
		p.mu.Lock()
		p.done = true
		p.mu.Unlock()
		if left := waitProcessesGone(p.dir, 10*time.Second); len(left) > 0 {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL) // ours: they carry our --user-data-dir
			}
			tb.Errorf("%s: %d Chromium processes were still running 10 s after the browser was closed: %v",
				p.person, len(left), left)
		}
	})
	return p
}

// use makes tb (a subtest) the page's test until the returned func restores the previous one.
func (p *page) use(tb testing.TB) (restore func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.tb
	p.tb = tb
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.tb = prev
	}
}

// logf writes to the test log with the person's name, until the test is over. A benchmark
// prints all of its log (and go test keeps only its first lines), so there the lines are kept
// and shown only on failure.
func (p *page) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if _, isBench := p.tb.(*testing.B); isBench && !testing.Verbose() {
		p.quietLines = append(p.quietLines, fmt.Sprintf(format, args...))
		return
	}
	p.tb.Logf("[%s] "+format, append([]any{p.person}, args...)...)
}

// console logs one console message, and remembers uncaught exceptions.
func (p *page) console(m chromedp.ConsoleMessage) {
	line := m.String()
	if m.URL != "" {
		line += fmt.Sprintf(" (%s:%d)", m.URL, m.Line+1)
	}
	line = tokenInURL.ReplaceAllString(line, "/v/<token>")
	if m.IsException() {
		if m.Stack != nil {
			for _, f := range m.Stack.CallFrames {
				line += fmt.Sprintf("\n    at %s (%s:%d)", f.FunctionName, f.URL, f.LineNumber+1)
			}
		}
		p.mu.Lock()
		p.exceptions = append(p.exceptions, line)
		p.mu.Unlock()
	}
	if strings.Contains(line, "signal failed") { // call.js: a description it could not apply
		p.mu.Lock()
		p.failedSigs = append(p.failedSigs, line)
		p.mu.Unlock()
	}
	p.logf("console %s", line)
}

// assertNoFailedSignals fails the test if the page could not apply a description it was
// sent (an answer to an offer already answered, an offer in the wrong state): after a
// network change the pages should send each offer once more at most, and only when the
// first may have been lost.
func (p *page) assertNoFailedSignals() {
	p.tb.Helper()
	p.assertNoLines(&p.failedSigs, "descriptions the page could not apply")
}

// assertNoExceptions fails the test if the page threw an exception nothing caught.
func (p *page) assertNoExceptions() {
	p.tb.Helper()
	p.assertNoLines(&p.exceptions, "uncaught exceptions in the page")
}

// assertNoLines fails the test, saying what they are, if the page's console gave any of
// these lines (a list of p's, read under its lock).
func (p *page) assertNoLines(lines *[]string, what string) {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(*lines) > 0 {
		p.tb.Errorf("%s: %s:\n%s", p.person, what, strings.Join(*lines, "\n"))
	}
}

// lockedWriter collects Chromium's own output (shown when it cannot start).
type lockedWriter struct{ p *page }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.output.Len() < 64<<10 {
		w.p.output.Write(b)
	}
	return len(b), nil
}

func (p *page) chromiumOutput() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// saveScreenshot writes artifacts/<test>-<person>.png and logs where.
func (p *page) saveScreenshot() {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.tb.Logf("[%s] no screenshot: %v", p.person, err)
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_", ":", "_").Replace(p.tb.Name()) + "-" + p.person + ".png"
	path, _ := filepath.Abs(filepath.Join("artifacts", name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		err = os.WriteFile(path, buf, 0o644)
	}
	if err != nil {
		p.tb.Logf("[%s] cannot save the screenshot: %v", p.person, err)
		return
	}
	p.tb.Logf("[%s] screenshot: %s", p.person, path)
}

// waitProcessesGone waits until no live process carries --user-data-dir=dir (Chromium passes
// it to every child it starts) and returns the ones left after the timeout.
func waitProcessesGone(dir string, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		left := processesUsing(dir)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processesUsing(dir string) []int {
	want := []byte("--user-data-dir=" + dir)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !containsArg(cmdline, want) {
			continue
		}
		if stat, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			// The state follows the command name in parentheses; a zombie has exited.
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

func containsArg(cmdline, arg []byte) bool {
	for a := range bytes.SplitSeq(cmdline, []byte{0}) {
		if bytes.Equal(a, arg) {
			return true
		}
	}
	return false
}

// --- actions -------------------------------------------------------------------------------

// step runs actions with the step timeout; a failure ends the test.
func (p *page) step(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.tb.Fatalf("%s: %s: %v\n%s", p.person, what, err, p.describe())
	}
}

// stepOnNode is step for an action on a node found by a selector. A document that was
// replaced between chromedp's query and its action (a navigation that committed just
// after the test saw the new URL, while chromedp still held a node of the one before)
// fails with a stale node id; the action is then done again, after undo (which puts back
// what a partly done action changed), up to three times.
func (p *page) stepOnNode(what string, undo string, action chromedp.Action[chromedp.Void]) {
	p.tb.Helper()
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
		err := chromedp.Do(ctx, action)
		cancel()
		if err == nil {
			return
		}
		if attempt == 3 || !strings.Contains(err.Error(), "node with given id") {
			p.tb.Fatalf("%s: %s: %v\n%s", p.person, what, err, p.describe())
		}
		p.logf("%s: %v (the document changed under it); again", what, err)
		if undo != "" {
			evalJS[chromedp.Void](p, undo)
		}
	}
}

// navigate opens url and waits for its load event.
func (p *page) navigate(url string) {
	p.tb.Helper()
	p.step("open "+redact(url), chromedp.Navigate(url))
}

// navigateStatus opens url and returns the HTTP status of the document.
func (p *page) navigateStatus(url string) int {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		p.tb.Fatalf("%s: open %s: %v", p.person, redact(url), err)
	}
	if resp == nil {
		p.tb.Fatalf("%s: open %s: no response", p.person, redact(url))
	}
	return int(resp.Status)
}

// click clicks the first visible element that matches the CSS selector, as a mouse would.
//
// chromedp clicks at the element's centre as it was a moment before; when the layout moves
// in between (a video tile appears, a panel grows as a call starts) the click lands
// elsewhere, as a person's would. So the document notes a click on whatever element matches
// the selector when the click arrives (the page may have rendered it anew since), and a
// click that missed is made again, up to three times, as a person would. (After a
// navigation the new document has no note: the click did its work.)
func (p *page) click(sel string) {
	p.tb.Helper()
	arm := fmt.Sprintf(`(() => {
		const sel = %q;
		if (!document.querySelector(sel)) return false;
		if (window.__bedsideArm) document.removeEventListener('click', window.__bedsideArm, true);
		window.__bedsideClicked = false;
		window.__bedsideArm = (e) => {
			if (e.target instanceof Element && e.target.closest(sel)) window.__bedsideClicked = true;
		};
		document.addEventListener('click', window.__bedsideArm, true);
		return true;
	})()`, sel)
	for attempt := 1; ; attempt++ {
		armed, _ := evalJS[bool](p, arm)
		p.stepOnNode("click "+sel, "", chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
		if !armed || attempt == 3 {
			return
		}
		missed, err := evalJS[bool](p, `window.__bedsideClicked === false`)
		if err != nil || !missed {
			return
		}
		p.logf("the click on %s missed it (the layout moved); clicking again", sel)
	}
}

// typeInto types text into the input that matches the CSS selector, key by key.
func (p *page) typeInto(sel, text string) {
	p.tb.Helper()
	clear := fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (el) el.value = ''; })()`, sel)
	p.stepOnNode("type into "+sel, clear, chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// evalJS evaluates a JavaScript expression (awaiting a promise) and decodes its value.
func evalJS[T any](p *page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// mustEval is evalJS that ends the test on an error.
func mustEval[T any](p *page, expr string) T {
	p.tb.Helper()
	v, err := evalJS[T](p, expr)
	if err != nil {
		p.tb.Fatalf("%s: evaluate %s: %v\n%s", p.person, expr, err, p.describe())
	}
	return v
}

// str is expr's value, a string (ui's).
func (p *page) str(expr string) string { p.tb.Helper(); return mustEval[string](p, expr) }

// waitFor polls a JavaScript expression (it may return a promise) until it is truthy.
func (p *page) waitFor(what, expr string) time.Duration {
	p.tb.Helper()
	return p.waitForWithin(what, expr, waitTimeout)
}

func (p *page) waitForWithin(what, expr string, timeout time.Duration) time.Duration {
	p.tb.Helper()
	took, lastErr := poll(timeout, func() (bool, error) { return evalJS[bool](p, truthy(expr)) })
	if took < 0 {
		p.tb.Fatalf("%s: waited %v for %s; last error: %v\n%s", p.person, timeout, what, lastErr, p.describe())
	}
	return took
}

// truthy is a JavaScript expression (it may return a promise) as a boolean.
func truthy(expr string) string { return "(async () => Boolean(await (" + expr + ")))()" }

// poll calls cond every pollEvery until it is true, and returns how long that took; -1 and
// cond's last error when timeout passed first.
func poll(timeout time.Duration, cond func() (bool, error)) (time.Duration, error) {
	start := time.Now()
	var lastErr error
	for {
		ok, err := cond()
		if err == nil && ok {
			return time.Since(start), nil
		}
		if err != nil {
			lastErr = err
		}
		if time.Since(start) > timeout {
			return -1, lastErr
		}
		time.Sleep(pollEvery)
	}
}

// visible is a JavaScript expression: the element with this id exists and is rendered.
func visible(id string) string {
	return fmt.Sprintf(`(() => { const el = document.getElementById(%q); return !!el && el.checkVisibility(); })()`, id)
}

// describe is a short account of the page for failure messages.
func (p *page) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const st = document.getElementById('call-status');
		const stages = [...document.querySelectorAll('section.stage, section#ended')].filter((e) => e.checkVisibility()).map((e) => e.id);
		const text = (document.body ? document.body.innerText : '').replace(/\s+/g, ' ').slice(0, 400);
		return 'page ' + location.pathname.replace(/\/v\/[^/]+/, '/v/<token>') +
			(st ? ' | #call-status[' + st.dataset.state + '] ' + st.textContent : '') +
			' | shown: ' + stages.join(',') + ' | text: ' + text;
	})()`))
	if err != nil {
		return fmt.Sprintf("(%s: page not readable: %v)", p.person, err)
	}
	return fmt.Sprintf("(%s: %s)", p.person, s)
}

// redact hides a link token in messages: it is a credential.
func redact(url string) string {
	return tokenInURL.ReplaceAllString(url, "/v/<token>")
}

var tokenInURL = regexp.MustCompile(`/v/[A-Za-z0-9_-]+`)

// --- WebRTC statistics ---------------------------------------------------------------------

// statsJS reads getStats() of every peer connection of the page's call
// (window.bedside.call.pcs, a Map of peer id to RTCPeerConnection): a promise of peerStats[].
const statsJS = `(async () => {
	const call = window.bedside && window.bedside.call;
	if (!call || !call.pcs) return [];
	const out = [];
	for (const [peer, pc] of call.pcs) {
		const report = await pc.getStats();
		const byId = new Map();
		report.forEach((v) => byId.set(v.id, v));
		const s = {peer, connectionState: pc.connectionState, framesDecoded: 0, videoPackets: 0,
			frameWidth: 0, audioPackets: 0, pair: null, current: !pc.__bedsideTestOld};
		for (const v of byId.values()) {
			if (v.type === 'inbound-rtp' && v.kind === 'video') {
				s.framesDecoded += v.framesDecoded || 0;
				s.videoPackets += v.packetsReceived || 0;
				s.frameWidth = Math.max(s.frameWidth, v.frameWidth || 0);
			} else if (v.type === 'inbound-rtp' && v.kind === 'audio') {
				s.audioPackets += v.packetsReceived || 0;
			} else if (v.type === 'transport' && v.selectedCandidatePairId) {
				const p = byId.get(v.selectedCandidatePairId);
				if (p) {
					const c = (x) => x ? {type: x.candidateType, address: x.address || x.ip || '', port: x.port || 0,
						protocol: x.protocol || '', network: x.networkType || ''} : null;
					s.pair = {state: p.state, local: c(byId.get(p.localCandidateId)),
						remote: c(byId.get(p.remoteCandidateId)), rttMs: (p.currentRoundTripTime || 0) * 1000};
				}
			}
		}
		out.push(s);
	}
	return out;
})()`

type candidate struct {
	Type     string `json:"type"`
	Address  string `json:"address"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Network  string `json:"network"`
}

func (c *candidate) String() string {
	if c == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s %s %s:%d", c.Type, c.Protocol, c.Address, c.Port)
}

type candidatePair struct {
	State  string     `json:"state"`
	Local  *candidate `json:"local"`
	Remote *candidate `json:"remote"`
	RTTMs  float64    `json:"rttMs"`
}

type peerStats struct {
	Peer            string         `json:"peer"`
	ConnectionState string         `json:"connectionState"`
	FramesDecoded   int            `json:"framesDecoded"`
	VideoPackets    int            `json:"videoPackets"`
	FrameWidth      int            `json:"frameWidth"`
	AudioPackets    int            `json:"audioPackets"`
	Pair            *candidatePair `json:"pair"`
	Current         bool           `json:"current"` // not marked old by markConnectionsOld
}

func (p *page) stats() []peerStats {
	p.tb.Helper()
	return mustEval[[]peerStats](p, statsJS)
}

// mediaFlowingJS is true when a current peer connection decodes video and receives audio.
const mediaFlowingJS = `(async () => (await ` + statsJS + `).some((s) => s.current && s.framesDecoded > 0 && s.audioPackets > 0))()`

// remoteVideoPlayingJS is true when a remote participant's video element in #remotes plays
// frames.
const remoteVideoPlayingJS = `[...document.querySelectorAll('#remotes video[data-peer-id]')].some((v) =>
	!v.paused && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0)`

// markConnectionsOld marks the page's current peer connections, so that a later wait can
// tell them from the ones made after a reload.
func (p *page) markConnectionsOld() {
	p.tb.Helper()
	mustEval[chromedp.Void](p, `(() => { for (const pc of window.bedside.call.pcs.values()) pc.__bedsideTestOld = true; })()`)
}
