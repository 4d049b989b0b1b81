//go:build browser

package browser

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// firefoxPath is Debian's Firefox ESR (scripts/test-deps.sh installs it).
const firefoxPath = "/usr/bin/firefox-esr"

// firefoxPrefs are the profile's preferences of shared/BROWSERS.md: fake camera and
// microphone without asking, autoplay, host candidates in the clear, and nothing that
// reaches for the internet.
var firefoxPrefs = map[string]any{
	"media.navigator.streams.fake":                      true,
	"media.navigator.permission.disabled":               true,
	"media.autoplay.default":                            0,
	"media.autoplay.blocking_policy":                    0,
	"media.peerconnection.ice.loopback":                 true,
	"media.peerconnection.ice.obfuscate_host_addresses": false,
	"app.update.enabled":                                false,
	"app.normandy.enabled":                              false,
	"datareporting.policy.dataSubmissionEnabled":        false,
	"datareporting.healthreport.uploadEnabled":          false,
	"toolkit.telemetry.enabled":                         false,
	"browser.safebrowsing.malware.enabled":              false,
	"browser.safebrowsing.phishing.enabled":             false,
	"network.captive-portal-service.enabled":            false,
	"network.connectivity-service.enabled":              false,
	"network.trr.mode":                                  5,
	"extensions.update.enabled":                         false,
	"media.gmp-manager.updateEnabled":                   false,
	"browser.shell.checkDefaultBrowser":                 false,
}

// ffPage is one person's Firefox, driven over WebDriver BiDi (Firefox speaks no CDP, so
// chromedp cannot): a process of its own with a fresh profile and its one tab. It does what
// the tests do with a page: navigate, evaluate, wait, click and type, and it keeps the
// console's errors. Everything it starts is stopped in the test's cleanup.
type ffPage struct {
	tb     testing.TB
	person string
	conn   *websocket.Conn
	tab    string // the browsing context

	mu      sync.Mutex
	nextID  int
	replies map[int]chan bidiMessage
	errs    []string // uncaught exceptions and console errors
	done    chan struct{}
}

type bidiMessage struct {
	ID      int             `json:"id"`
	Type    string          `json:"type"` // success, error, event
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
}

// newFirefox starts Firefox for person with firefoxPrefs and extra; wrap, if not nil,
// prefixes the command (ip netns exec), and dial, if not nil, runs the opening of the BiDi
// socket where the browser listens (on its namespace's loopback).
func newFirefox(tb testing.TB, person string, extra map[string]any, wrap []string, dial func(func())) *ffPage {
	tb.Helper()
	if _, err := os.Stat(firefoxPath); err != nil {
		tb.Fatalf("Firefox is not installed at %s (%v): apt-get install firefox-esr", firefoxPath, err)
	}
	dir := tb.TempDir()
	var prefs strings.Builder
	for _, m := range []map[string]any{firefoxPrefs, extra} {
		for k, v := range m {
			b, _ := json.Marshal(v)
			fmt.Fprintf(&prefs, "user_pref(%q, %s);\n", k, b)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "user.js"), []byte(prefs.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	args := append(append([]string{}, wrap...), firefoxPath, "--headless", "--no-remote", "--profile", dir, "--remote-debugging-port=0", "about:blank")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "MOZ_CRASHREPORTER_DISABLE=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("%s: start Firefox: %v", person, err)
	}
	p := &ffPage{tb: tb, person: person, replies: map[int]chan bidiMessage{}, done: make(chan struct{})}
	exited := make(chan struct{})
	tb.Cleanup(func() {
		if p.conn != nil {
			p.conn.Close(websocket.StatusNormalClosure, "")
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		<-p.done
	})
	// Its output: the socket's address, then drained (and kept for a failure) until it ends.
	listening := make(chan string, 1)
	var output []string
	var outMu sync.Mutex
	go func() { // ends with the process's stderr
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "WebDriver BiDi listening on "); ok {
				select {
				case listening <- strings.TrimSpace(u):
				default:
				}
			}
			outMu.Lock()
			if len(output) < 200 {
				output = append(output, line)
			}
			outMu.Unlock()
		}
		cmd.Wait()
	}()
	var url string
	select {
	case url = <-listening:
	case <-exited:
		outMu.Lock()
		defer outMu.Unlock()
		tb.Fatalf("%s: Firefox ended before listening:\n%s", person, strings.Join(output, "\n"))
	case <-time.After(30 * time.Second):
		outMu.Lock()
		defer outMu.Unlock()
		tb.Fatalf("%s: Firefox not listening after 30 s:\n%s", person, strings.Join(output, "\n"))
	}
	// The socket is made by dial (on a thread in the browser's namespace: the HTTP client
	// would dial from a goroutine of its own), then used for the handshake.
	var raw net.Conn
	if dial == nil { // the browser is on this host's loopback
		dial = func(f func()) { f() }
	}
	dial(func() { raw, err = net.DialTimeout("tcp", strings.TrimPrefix(url, "ws://"), 10*time.Second) })
	var conn *websocket.Conn
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		client := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
			if raw == nil {
				return nil, errors.New("the socket was used")
			}
			c := raw
			raw = nil
			return c, nil
		}}}
		conn, _, err = websocket.Dial(ctx, url+"/session", &websocket.DialOptions{HTTPClient: client})
		cancel()
	}
	if err != nil {
		close(p.done)
		tb.Fatalf("%s: connect to Firefox's BiDi socket %s: %v", person, url, err)
	}
	conn.SetReadLimit(64 << 20)
	p.conn = conn
	go p.read() // ends when the socket closes (the cleanup)

	// A confirm() (ending a visit, removing someone) is answered OK, as the Chromium pages'.
	p.call("session.new", map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"unhandledPromptBehavior": map[string]any{"default": "accept"}}}})
	p.call("session.subscribe", map[string]any{"events": []string{"log.entryAdded"}})
	var tree struct {
		Contexts []struct {
			Context string `json:"context"`
		} `json:"contexts"`
	}
	if err := json.Unmarshal(p.call("browsingContext.getTree", map[string]any{}), &tree); err != nil || len(tree.Contexts) == 0 {
		tb.Fatalf("%s: Firefox's tab: %v", person, err)
	}
	p.tab = tree.Contexts[0].Context
	tb.Logf("[%s] Firefox started in %v (pid %d)", person, time.Since(start).Round(time.Millisecond), cmd.Process.Pid)
	return p
}

// read takes the socket's messages: replies to their callers, console entries kept.
func (p *ffPage) read() {
	defer close(p.done)
	for {
		_, b, err := p.conn.Read(context.Background())
		if err != nil {
			return
		}
		var m bidiMessage
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		if m.Type == "event" {
			if m.Method == "log.entryAdded" {
				var e struct {
					Type  string `json:"type"`
					Level string `json:"level"`
					Text  string `json:"text"`
				}
				if json.Unmarshal(m.Params, &e) == nil {
					if e.Type == "javascript" || e.Level == "error" {
						p.mu.Lock()
						p.errs = append(p.errs, e.Text)
						p.mu.Unlock()
					}
					p.tb.Logf("[%s] console %s: %s", p.person, e.Level, e.Text)
				}
			}
			continue
		}
		p.mu.Lock()
		ch := p.replies[m.ID]
		delete(p.replies, m.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// call sends a command and returns its result; an error fails the test.
func (p *ffPage) call(method string, params any) json.RawMessage {
	p.tb.Helper()
	r, err := p.try(method, params)
	if err != nil {
		p.tb.Fatalf("%s: %s: %v", p.person, method, err)
	}
	return r
}

func (p *ffPage) try(method string, params any) (json.RawMessage, error) {
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	ch := make(chan bidiMessage, 1)
	p.replies[id] = ch
	p.mu.Unlock()
	b, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := p.conn.Write(ctx, websocket.MessageText, b); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		if m.Type == "error" {
			return nil, fmt.Errorf("%s: %s", m.Error, m.Message)
		}
		return m.Result, nil
	case <-ctx.Done():
		p.mu.Lock()
		delete(p.replies, id)
		p.mu.Unlock()
		return nil, errors.New("no answer in time")
	case <-p.done:
		return nil, errors.New("the browser's socket closed")
	}
}

func (p *ffPage) navigate(url string) {
	p.tb.Helper()
	p.call("browsingContext.navigate", map[string]any{"context": p.tab, "url": url, "wait": "complete"})
}

// reload reloads the page, as the browser's reload button does.
func (p *ffPage) reload() {
	p.tb.Helper()
	p.call("browsingContext.reload", map[string]any{"context": p.tab, "wait": "complete"})
}

// ffEval evaluates expr (a promise is awaited) in the page, with a user's activation (as
// a click would give), and decodes its value as JSON into T.
func ffEval[T any](p *ffPage, expr string) (T, error) {
	var v T
	r, err := p.try("script.evaluate", map[string]any{
		"expression":      "(async () => JSON.stringify(await (" + expr + ")))()",
		"target":          map[string]any{"context": p.tab},
		"awaitPromise":    true,
		"userActivation":  true,
		"resultOwnership": "none",
	})
	if err != nil {
		return v, err
	}
	var res struct {
		Type   string `json:"type"`
		Result struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(r, &res); err != nil {
		return v, err
	}
	if res.Type == "exception" {
		return v, fmt.Errorf("exception: %s", res.ExceptionDetails.Text)
	}
	if res.Result.Type != "string" { // undefined
		return v, nil
	}
	return v, json.Unmarshal([]byte(res.Result.Value), &v)
}

func ffMust[T any](p *ffPage, expr string) T {
	p.tb.Helper()
	v, err := ffEval[T](p, expr)
	if err != nil {
		p.tb.Fatalf("%s: %s: %v", p.person, expr, err)
	}
	return v
}

// str is expr's value, a string (ui's).
func (p *ffPage) str(expr string) string { p.tb.Helper(); return ffMust[string](p, expr) }

// waitFor polls a JavaScript expression (it may return a promise) until it is truthy.
func (p *ffPage) waitFor(what, expr string) time.Duration {
	p.tb.Helper()
	return p.waitForWithin(what, expr, waitTimeout)
}

func (p *ffPage) waitForWithin(what, expr string, timeout time.Duration) time.Duration {
	p.tb.Helper()
	took, lastErr := poll(timeout, func() (bool, error) { return ffEval[bool](p, truthy(expr)) })
	if took < 0 {
		p.tb.Fatalf("%s: waited %v for %s; last error: %v", p.person, timeout, what, lastErr)
	}
	return took
}

func (p *ffPage) click(sel string) {
	p.tb.Helper()
	ffMust[any](p, fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) throw new Error('no %s'); e.click(); return null; })()`, sel, sel))
}

func (p *ffPage) typeInto(sel, text string) {
	p.tb.Helper()
	ffMust[any](p, fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.focus(); e.value = %q;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return null; })()`, sel, text))
}

// assertNoErrors fails the test on an uncaught exception or console error the page had,
// but those that contain one of allowed (Firefox's own reports of a network failure, in a
// test that makes one).
func (p *ffPage) assertNoErrors(allowed ...string) {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errs {
		if !slices.ContainsFunc(allowed, func(a string) bool { return strings.Contains(e, a) }) {
			p.tb.Errorf("%s: console error or exception: %s", p.person, e)
		}
	}
}

// firefoxPatientJoins takes the patient on Firefox through the link, the device check and
// the waiting room, and the clinician admits them. The test hosts have no sound output, so
// the microphone's meter stays still and the page shows its hint to click instead.
func firefoxPatientJoins(ff *ffPage, r *rig) {
	ff.tb.Helper()
	joinAsPatient(ff, r.patientURL, "Ada", "the microphone hint (no sound output here, so no level)", `!document.getElementById('mic-hint').hidden`)
	r.admit("Ada")
}

// checkE2EEFirefox asserts that the Firefox page and the other person's Chromium page each
// encrypt what they send and decrypt the other's frames with the key the other sent it,
// that no frame failed to authenticate, and that both show the same safety code.
func checkE2EEFirefox(t *testing.T, ff *ffPage, chromium *page) {
	t.Helper()
	// End to end: each page encrypts what it sends and decrypts the other's frames with
	// the key the other sent it; both show the same safety code.
	ffWaitE2EE := `(async () => { const s = await ` + e2eeStatsJS + `; return !!s && s.encrypted > 0 && s.decrypted > 0; })()`
	ff.waitFor("frames encrypted and decrypted", ffWaitE2EE)
	fs := ffMust[*e2eeStats](ff, e2eeStatsJS)
	cs := readE2EE(chromium)
	chromiumID := mustEval[string](chromium, `window.bedside.call.selfId`)
	firefoxID := ffMust[string](ff, `window.bedside.call.selfId`)
	t.Logf("Firefox: %d frames encrypted, %d decrypted, %d without a key, %d failed; safety code %s", fs.Encrypted, fs.Decrypted, fs.NoKey, fs.Failed, fs.Code)
	t.Logf("Chromium: %d frames encrypted, %d decrypted, %d without a key, %d failed; safety code %s", cs.Encrypted, cs.Decrypted, cs.NoKey, cs.Failed, cs.Code)
	if fs.Failed != 0 || fs.Short != 0 || cs.Failed != 0 || cs.Short != 0 {
		t.Errorf("frames that failed to authenticate: Firefox %d (%d short), Chromium %d (%d short)", fs.Failed, fs.Short, cs.Failed, cs.Short)
	}
	if cs.Decrypted == 0 || fs.Decrypted == 0 || cs.Encrypted == 0 || fs.Encrypted == 0 {
		t.Errorf("frames encrypted/decrypted: Firefox %d/%d, Chromium %d/%d", fs.Encrypted, fs.Decrypted, cs.Encrypted, cs.Decrypted)
	}
	if !slices.Contains(fs.ReceiveKids[chromiumID], cs.SendKid) || !slices.Contains(cs.ReceiveKids[firefoxID], fs.SendKid) {
		t.Errorf("keys: Firefox holds %v of Chromium's (sending %d), Chromium %v of Firefox's (sending %d)",
			fs.ReceiveKids[chromiumID], cs.SendKid, cs.ReceiveKids[firefoxID], fs.SendKid)
	}
	if fs.Code == "" || fs.Code != cs.Code {
		t.Errorf("safety codes: Firefox %q, Chromium %q", fs.Code, cs.Code)
	}
}
