package turn

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/bedside/bedside/internal/audit"
)

// These tests drive Bedside's relay with a TURN client nobody here wrote: turnutils_uclient
// from Debian's coturn package (scripts/test-deps.sh installs it). They fail, never skip,
// when it is missing.

func uclientPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("turnutils_uclient")
	if err != nil {
		t.Fatalf("turnutils_uclient is not installed (Debian package coturn; make deps installs it): %v", err)
	}
	return p
}

// runUclient runs turnutils_uclient with args against 127.0.0.1 and returns its output.
func runUclient(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, uclientPath(t), append(args, "127.0.0.1")...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("turnutils_uclient %v did not finish: %s", args, out)
	}
	_ = err // it exits non-zero on refusals; the output says what happened
	return string(out)
}

var (
	lostRE = regexp.MustCompile(`Total lost packets (\d+) \(([\d.]+)%\)`)
	recvRE = regexp.MustCompile(`tot_recv_msgs=(\d+)`)
	sendRE = regexp.MustCompile(`tot_send_msgs=(\d+)`)
)

// TestUclientRelays: allocate, relay and receive with REST credentials made by
// turnutils_uclient itself from the secret (-W), over UDP and over TCP. uclient signs
// usernames valid for 24 h, so this server accepts up to 25 h.
func TestUclientRelays(t *testing.T) {
	s := startServer(t, func(c *Config) { loopback(c); c.TTLMax = 25 * time.Hour })
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"udp", nil},
		{"tcp", []string{"-t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-y", "-c", "-W", string(secretA), "-u", "prt_uclient", "-n", "40", "-l", "120", "-z", "5",
				"-p", strconv.Itoa(s.Port())}, tc.flags...)
			out := runUclient(t, args...)
			sends, recvs := lastMatch(sendRE, out), lastMatch(recvRE, out)
			lost := lostRE.FindStringSubmatch(out)
			if sends == nil || recvs == nil || lost == nil {
				t.Fatalf("turnutils_uclient output has no totals:\n%s", out)
			}
			sent, _ := strconv.Atoi(sends[1])
			recv, _ := strconv.Atoi(recvs[1])
			if sent == 0 || recv < sent || lost[1] != "0" {
				t.Errorf("sent %d, received %d, lost %s:\n%s", sent, recv, lost[1], out)
			}
			t.Logf("turnutils_uclient %s: sent %d, received %d, lost %s", tc.name, sent, recv, lost[1])
		})
	}
}

func lastMatch(re *regexp.Regexp, s string) []string {
	all := re.FindAllStringSubmatch(s, -1)
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}

// TestUclientRefused: expired, forged and over-TTL credentials get 401. uclient does not
// print the codes it gets, so it talks to the server through a UDP tap that reads them.
func TestUclientRefused(t *testing.T) {
	rec := newRecorder()
	s := startServer(t, func(c *Config) { loopback(c); c.Recorder = rec }) // TTL cap 1 h
	tap := newTap(t, s.udpAddr())
	expired := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10) + ":prt_old"
	fresh := strconv.FormatInt(time.Now().Add(5*time.Minute).Unix(), 10) + ":prt_forger"
	for _, tc := range []struct {
		name   string
		args   []string
		reason string // of the refusal, in the audit trail
	}{
		// uclient's own REST usernames are valid for 24 h: over this server's 1 h cap.
		{"over the TTL cap", []string{"-W", string(secretA), "-u", "prt_greedy"}, "over_ttl"},
		{"forged (another secret)", []string{"-u", fresh, "-w", restPassword([]byte("not-the-secret"), fresh)}, "bad_credentials"},
		{"expired", []string{"-u", expired, "-w", restPassword(secretA, expired)}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tap.reset()
			out := runUclient(t, append([]string{"-y", "-c", "-n", "2", "-p", strconv.Itoa(tap.port())}, tc.args...)...)
			if !strings.Contains(out, "Cannot complete Allocation") {
				t.Errorf("uclient allocated:\n%s", out)
			}
			codes := tap.codes()
			if len(codes) < 2 || codes[len(codes)-1] != 401 {
				t.Errorf("error codes answered: %v, want 401 after the credentials were sent", codes)
			}
			if s.Allocations("") != 0 {
				t.Errorf("%d allocations made", s.Allocations(""))
			}
			if !sawRefusal(rec, tc.reason) {
				t.Errorf("no refusal %q in the audit trail", tc.reason)
			}
		})
	}
	// The control: a credential within the cap, signed by the server, allocates and relays.
	c := s.Issue("prt_fine", 10*time.Minute)
	out := runUclient(t, "-y", "-c", "-n", "5", "-p", strconv.Itoa(s.Port()), "-u", c.Username, "-w", c.Password)
	if m := lostRE.FindStringSubmatch(out); m == nil || m[1] != "0" {
		t.Errorf("a valid credential:\n%s", out)
	}
}

func sawRefusal(rec *recorder, reason string) bool {
	for {
		select {
		case e := <-rec.ch:
			if e.Action == audit.TURNRefused && e.Outcome == reason {
				return true
			}
		default:
			return false
		}
	}
}

// tap relays UDP between clients and the server and notes the error codes of the server's
// STUN answers.
type tap struct {
	t    testing.TB
	conn net.PacketConn
	mu   sync.Mutex
	seen []int
}

func newTap(t testing.TB, server string) *tap {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := net.ResolveUDPAddr("udp4", server)
	tp := &tap{t: t, conn: pc}
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	upstreams := map[string]net.PacketConn{}
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				for _, u := range upstreams {
					u.Close()
				}
				return
			}
			up := upstreams[from.String()]
			if up == nil {
				up, err = net.ListenPacket("udp4", "127.0.0.1:0")
				if err != nil {
					continue
				}
				upstreams[from.String()] = up
				wg.Go(func() {
					b := make([]byte, 2048)
					for {
						n, _, err := up.ReadFrom(b)
						if err != nil {
							return
						}
						m := &stun.Message{Raw: append([]byte(nil), b[:n]...)}
						if m.Decode() == nil {
							if code := errCode(m); code != 0 {
								tp.mu.Lock()
								tp.seen = append(tp.seen, int(code))
								tp.mu.Unlock()
							}
						}
						pc.WriteTo(b[:n], from)
					}
				})
			}
			up.WriteTo(buf[:n], srv)
		}
	})
	return tp
}

func (tp *tap) port() int { return tp.conn.LocalAddr().(*net.UDPAddr).Port }

func (tp *tap) reset() {
	tp.mu.Lock()
	tp.seen = nil
	tp.mu.Unlock()
}

func (tp *tap) codes() []int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]int(nil), tp.seen...)
}
