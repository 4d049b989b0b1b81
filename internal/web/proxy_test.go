package web

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
)

// TestTrustedProxies: behind a trusted reverse proxy (here the test's own loopback
// address), the client's address in the audit trail and in the per-address limits is the
// one the proxy put in X-Forwarded-For, read from the right; without trusted proxies the
// header is the client's own word and is ignored.
func TestTrustedProxies(t *testing.T) {
	n := 0
	failedFrom := func(h *harness, xff string) string {
		t.Helper()
		n++ // another account each time: five failures lock an account
		hdr := map[string]string{"Origin": h.publicURL, "Sec-Fetch-Site": "same-origin"}
		if xff != "" {
			hdr["X-Forwarded-For"] = xff
		}
		checkError(t, h.do(t, req{method: "POST", path: "/api/v1/session", body: fmt.Sprintf(`{"email":"nobody%d@clinic.example","password":"wrong"}`, n), header: hdr}), 401, "bad_credentials")
		got := h.trail(t, audit.SignInFailed)
		return got[len(got)-1].Addr
	}

	h := newHarness(t, options{proxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}})
	for _, tc := range []struct{ xff, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"198.51.100.1, 203.0.113.7", "203.0.113.7"}, // the left one is what the client wrote
		{"203.0.113.7, 10.1.2.3", "203.0.113.7"},     // past a second proxy of ours
		{"2001:db8::5", "2001:db8::5"},
		{"203.0.113.8:51234", "203.0.113.8"}, // with a port, as some load balancers write it
		{"[2001:db8::6]:443", "2001:db8::6"},
		{"::ffff:203.0.113.9", "203.0.113.9"},
		{"10.9.9.9", "10.9.9.9"},           // a client inside the proxies' range
		{"nonsense, 10.1.2.3", "10.1.2.3"}, // stops at the last proxy believed
		{"", "127.0.0.1"},                  // no header: the proxy itself
	} {
		if got := failedFrom(h, tc.xff); got != tc.want {
			t.Errorf("X-Forwarded-For %q: audited from %q, want %q", tc.xff, got, tc.want)
		}
	}

	// The per-address lockout counts each forwarded client on its own: one locked out,
	// another behind the same proxy is not.
	_, tok := h.newVisit(t)
	link := func(from, token string) response {
		return h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Ada"}`, token),
			header: map[string]string{"Origin": h.publicURL, "Sec-Fetch-Site": "same-origin", "X-Forwarded-For": from}})
	}
	for i := 0; i < auth.RuleLinkAddress.Max; i++ {
		checkError(t, link("203.0.113.20", auth.NewToken()), 404, "link_unknown")
	}
	checkError(t, link("203.0.113.20", tok), 429, "rate_limited")
	if r := link("203.0.113.21", tok); r.status != 200 {
		t.Errorf("another patient behind the same proxy: %d %s, want 200", r.status, r.body)
	}

	// No trusted proxies: the header is ignored.
	plain := newHarness(t, options{})
	if got := failedFrom(plain, "203.0.113.7"); got != "127.0.0.1" {
		t.Errorf("without trusted proxies, X-Forwarded-For 203.0.113.7: audited from %q, want the TCP peer 127.0.0.1", got)
	}
}
