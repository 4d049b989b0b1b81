//go:build browser

package browser

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bedside/bedside/internal/app/apptest"
)

// TestSFrameVectors runs the page's SFrame (webui/static/js/sframe.js, what the end-to-end
// encryption worker uses on every frame) in Chromium against RFC 9605's test vectors: the
// 289 header encodings of appendix C.1, and the AES_128_GCM_SHA256_128 vector of C.3 (key
// derivation labels, nonce, ciphertext), then decrypts that ciphertext, and checks that one
// changed byte of it, or of its metadata, makes decryption fail.
func TestSFrameVectors(t *testing.T) {
	vectors, err := os.ReadFile("testdata/sframe-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := apptest.Start(t, apptest.Options{})
	p := newPage(t, "browser")
	p.navigate(srv.URL() + "/signin")
	problems := mustEval[[]string](p, `(async () => {
	const sf = await import('/static/js/sframe.js');
	const v = `+string(vectors)+`;
	const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
	const unhex = (h) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
	const big = (x) => BigInt(x);
	const out = [];
	for (const h of v.headers) {
		const got = hex(sf.encodeHeader(big(h.kid), big(h.ctr)));
		if (got !== h.header) out.push('header ' + h.kid + ' ' + h.ctr + ': ' + got + ', want ' + h.header);
		const d = sf.decodeHeader(unhex(h.header + 'aabb'));
		if (!d || d.kid !== big(h.kid) || d.ctr !== big(h.ctr) || d.length !== h.header.length / 2) out.push('decode ' + h.header);
	}
	const c = v.aes128gcm;
	if (hex(sf.label('key', c.kid)) !== c.sframe_key_label) out.push('key label ' + hex(sf.label('key', c.kid)));
	if (hex(sf.label('salt', c.kid)) !== c.sframe_salt_label) out.push('salt label');
	const k = await sf.deriveFrameKey(c.kid, unhex(c.base_key));
	if (hex(k.salt) !== c.sframe_salt) out.push('salt ' + hex(k.salt));
	if (hex(sf.nonce(k.salt, big(c.ctr))) !== c.nonce) out.push('nonce');
	const ct = await sf.encrypt(k, c.kid, c.ctr, unhex(c.metadata), unhex(c.pt));
	if (hex(ct) !== c.ct) out.push('ciphertext ' + hex(ct));
	const header = sf.decodeHeader(unhex(c.ct));
	const pt = await sf.decrypt(k, header, unhex(c.metadata), unhex(c.ct));
	if (hex(pt) !== c.pt) out.push('plaintext ' + hex(pt));
	const bad = unhex(c.ct);
	bad[bad.length - 20] ^= 1;
	if (await sf.decrypt(k, header, unhex(c.metadata), bad).then(() => true, () => false)) out.push('a changed ciphertext decrypted');
	const meta = unhex(c.metadata);
	meta[0] ^= 1;
	if (await sf.decrypt(k, header, meta, unhex(c.ct)).then(() => true, () => false)) out.push('changed metadata decrypted');
	if (v.headers.length !== 289) out.push(v.headers.length + ' header vectors');
	// Anti-replay (RFC 9605 section 9.3): [CTR, accepted?] in the order a receiver sees them.
	const w = new sf.ReplayWindow(sf.REPLAY_WINDOW);
	const steps = [[5n, true], [3n, true], [5n, false], [4n, true], [3n, false], [0n, true],
		[5000n, true], [904n, false], [905n, true], [905n, false], [4999n, true], [5000n, false],
		[1n << 60n, false], [5001n, true], [20000n, true], [19999n, true], [15904n, false], [15905n, true]];
	for (const [ctr, want] of steps) {
		if (w.accept(ctr) !== want) out.push('replay window: CTR ' + ctr + (want ? ' refused' : ' accepted'));
	}
	return out;
})()`)
	for _, s := range problems {
		t.Error(s)
	}
}

// TestE2EEKeysInTurn: a participant's public key and then its frame key arrive back to back
// (the second message while the page still imports the key of the first, as Firefox's
// slower WebCrypto made happen in a visit through the SFU, decision 77): the frame key is
// taken, not dropped for want of a wrapping key not yet derived. Two of the page's E2EE
// objects, A and B, exchange their messages directly.
func TestE2EEKeysInTurn(t *testing.T) {
	got := e2eePair(t, `
	await a.receive(sent.b.shift()); // A has B's public key now, and sends its frame key
	const [pubOnly, withKey] = sent.a.splice(0);
	const first = b.receive(pubOnly);
	const second = b.receive(withKey); // before the first is done
	await Promise.all([first, second]);
	return {pubOnlyHasKey: !!pubOnly?.key, withKeyHasKey: !!withKey?.key, aKid: a.kid,
		bHolds: b.parties.get('prt_a')?.kid ?? 0, bReceived: b.received.get('prt_a') ?? []};`)
	t.Logf("%v", got)
	if got["pubOnlyHasKey"] != false || got["withKeyHasKey"] != true {
		t.Fatalf("the messages A sent: %v, want its public key alone, then its frame key", got)
	}
	if got["bHolds"] != got["aKid"] {
		t.Errorf("B holds A's frame key %v, want %v (A's key dropped while B imported its public key)", got["bHolds"], got["aKid"])
	}
}

// TestE2EELeftInTurn: a participant's leave is handled after its key message that came
// before it, not while that message is still being unwrapped. A holds no key of the
// departed B afterwards, no longer counts B as a party, has moved to a new frame key and
// has sent that key to nobody (B would otherwise have been made a party again by its own
// message, and been sent it). The frame key A sends B in answer to B's, before the leave,
// is the old one.
func TestE2EELeftInTurn(t *testing.T) {
	got := e2eePair(t, `
	await b.receive(sent.a.shift()); // B has A's public key, and sends its frame key
	const withKey = sent.b.find((m) => m.key);
	const kidBefore = a.kid;
	sent.a.splice(0);
	const received = a.receive(withKey);
	const left = a.left('prt_b'); // before B's key is unwrapped
	await Promise.all([received, left]);
	const s = await a.stats();
	return {bSentKey: !!withKey, rotated: a.kid !== kidBefore, aParty: a.parties.has('prt_b'),
		workerHoldsB: 'prt_b' in (s.receiveKids ?? {}), newKeySent: sent.a.filter((m) => m.key && m.kid === a.kid).length};`)
	t.Logf("%v", got)
	if got["bSentKey"] != true {
		t.Fatalf("B sent no frame key: %v", got)
	}
	if got["workerHoldsB"] != false || got["aParty"] != false {
		t.Errorf("after B left, A's worker holds B's key: %v, B is A's party: %v (want neither)", got["workerHoldsB"], got["aParty"])
	}
	if got["rotated"] != true {
		t.Errorf("A kept its frame key after B left")
	}
	if n := got["newKeySent"]; n != float64(0) {
		t.Errorf("A sent its new frame key %v times, want never (B left, nobody else is in the call)", n)
	}
}

// e2eePair runs body in a page with two of its E2EE objects, A (prt_a) and B (prt_b),
// whose messages are kept in sent.a and sent.b instead of being sent, each told of the
// other (A first: A's first message, its public key alone, is kept before B's), and
// returns what body returns. Both are closed after it.
func e2eePair(t *testing.T, body string) map[string]any {
	t.Helper()
	srv := apptest.Start(t, apptest.Options{})
	p := newPage(t, "browser")
	p.navigate(srv.URL() + "/signin")
	return mustEval[map[string]any](p, `(async () => {
	const {E2EE} = await import('/static/js/e2ee.js');
	const sent = {a: [], b: []};
	const a = new E2EE((m) => sent.a.push({...m, from: 'prt_a'}));
	const b = new E2EE((m) => sent.b.push({...m, from: 'prt_b'}));
	a.selfId = 'prt_a';
	b.selfId = 'prt_b';
	try {
		await a.joined('prt_b', 's_b'); // A knows nothing of B yet: its public key alone
		await b.joined('prt_a', 's_a');
		return await (async () => {`+body+`})();
	} finally {
		a.close();
		b.close();
	}
})()`)
}

// e2eeStatsJS reads a page's end-to-end encryption: the worker's counts and keys
// (e2ee.js, E2EEStats), the KIDs the page was given (kept after the call closes) and its
// safety code.
const e2eeStatsJS = `(async () => {
	const e = window.bedside.call.e2ee;
	if (!e) return null;
	const s = e.closed ? {} : await e.stats();
	return {...s, received: Object.fromEntries(e.received), code: await e.safetyCode()};
})()`

type e2eeStats struct {
	Encrypted   int                `json:"encrypted"`
	Decrypted   int                `json:"decrypted"`
	NoKey       int                `json:"noKey"`
	Failed      int                `json:"failed"`
	Short       int                `json:"short"`
	Replayed    int                `json:"replayed"`
	ReplayedA   int                `json:"replayedAudio"`
	SendKid     int64              `json:"sendKid"`
	ReceiveKids map[string][]int64 `json:"receiveKids"`
	Received    map[string][]int64 `json:"received"`
	Code        string             `json:"code"`
}

func readE2EE(p *page) e2eeStats {
	p.tb.Helper()
	s := mustEval[*e2eeStats](p, e2eeStatsJS)
	if s == nil {
		p.tb.Fatalf("%s: the call has no end-to-end encryption", p.person)
	}
	return *s
}

// checkE2EE asserts that every page encrypts what it sends and decrypts what it receives
// with the others' current keys, that nothing failed to authenticate, and that all show the
// same safety code. It returns each page's stats by name.
func checkE2EE(t *testing.T, pages map[string]*page, ids map[string]string) map[string]e2eeStats {
	t.Helper()
	all := map[string]e2eeStats{}
	for name, p := range pages {
		all[name] = readE2EE(p)
	}
	code := ""
	for name, s := range all {
		var kids []string
		for other := range pages {
			if other == name {
				continue
			}
			kids = append(kids, fmt.Sprintf("%s %d", other, all[other].SendKid))
			if !slices.Contains(s.ReceiveKids[ids[other]], all[other].SendKid) {
				t.Errorf("%s does not hold %s's frame key %d: %v", name, other, all[other].SendKid, s.ReceiveKids)
			}
		}
		// Replayed is logged, not asserted: Chromium hands the receive transform some video
		// frames twice in a call's first seconds (0 to 7 of some 140 in TestOneToOneVisit;
		// in a debug run every one of them byte for byte the frame accepted before, so
		// copies, not a reused CTR), and refusing a copy is right. A window refusing real
		// frames would show as video not decoded, which the tests assert.
		pages[name].logf("e2ee: %d frames encrypted, %d decrypted, %d without a key, %d failed, %d replayed (%d audio); safety code %s; holds %s",
			s.Encrypted, s.Decrypted, s.NoKey, s.Failed, s.Replayed, s.ReplayedA, s.Code, strings.Join(kids, ", "))
		if s.Encrypted == 0 || s.Decrypted == 0 {
			t.Errorf("%s: %d frames encrypted, %d decrypted", name, s.Encrypted, s.Decrypted)
		}
		if s.Failed != 0 || s.Short != 0 {
			t.Errorf("%s: %d frames failed to authenticate, %d too short for SFrame", name, s.Failed, s.Short)
		}
		switch {
		case s.Code == "":
			t.Errorf("%s: no safety code", name)
		case code == "":
			code = s.Code
		case s.Code != code:
			t.Errorf("%s shows the safety code %s, another page %s", name, s.Code, code)
		}
	}
	return all
}

// BenchmarkSFrame is what the end-to-end encryption costs per frame in Chromium: sframe.js's
// encrypt and decrypt (WebCrypto AES-128-GCM, the SFrame header and AAD) of an audio frame
// (160 bytes), a camera frame (1200) and a key frame (12000), one after the other as a
// single stream would be without the worker's pipelining, and 16 at a time as the worker
// keeps them (docs/design.md decision 65; docs/benchmarks.md).
func BenchmarkSFrame(b *testing.B) {
	srv := apptest.Start(b, apptest.Options{})
	p := newPage(b, "browser")
	p.navigate(srv.URL() + "/signin")
	for _, size := range []int{160, 1200, 12000} {
		for _, c := range []struct {
			name     string
			inFlight int
		}{{"encrypt", 1}, {"encrypt16", 16}, {"decrypt", 1}} {
			b.Run(fmt.Sprintf("%s/%dB", c.name, size), func(b *testing.B) {
				ms := mustEval[float64](p, fmt.Sprintf(`(async () => {
	const sf = await import('/static/js/sframe.js');
	const k = await sf.deriveFrameKey(7, crypto.getRandomValues(new Uint8Array(16)));
	const data = crypto.getRandomValues(new Uint8Array(%d));
	const ct = await sf.encrypt(k, 7, 1, data.subarray(0, 3), data.subarray(3));
	const h = sf.decodeHeader(ct);
	const n = %d, inFlight = %d, decrypt = %t;
	const one = (i) => decrypt ? sf.decrypt(k, h, data.subarray(0, 3), ct) : sf.encrypt(k, 7, i, data.subarray(0, 3), data.subarray(3));
	const t0 = performance.now();
	for (let i = 0; i < n; i += inFlight) {
		const batch = [];
		for (let j = i; j < Math.min(n, i + inFlight); j++) batch.push(one(j));
		await Promise.all(batch);
	}
	return performance.now() - t0;
})()`, size, b.N, c.inFlight, c.name == "decrypt"))
				b.ReportMetric(ms*1e6/float64(b.N), "ns/op")
			})
		}
	}
}
