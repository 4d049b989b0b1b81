package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTURNErrors(t *testing.T) {
	dir := t.TempDir()
	readable := filepath.Join(dir, "readable")
	os.WriteFile(readable, []byte("0123456789abcdef0123\n"), 0o640)
	three := filepath.Join(dir, "three")
	os.WriteFile(three, []byte("0123456789abcdef0123\nabcdefghijklmnopqrst\nzyxwvutsrqponmlkjihg\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown mode", []string{"--turn=coturn"}, []string{"turn", "coturn"}},
		{"secret file readable by group", []string{"--turn-secret-file=" + readable}, []string{"turn-secret-file", "0640", "group or others"}},
		{"secret file missing", []string{"--turn-secret-file=" + filepath.Join(dir, "nope")}, []string{"turn-secret-file"}},
		{"secret file empty", []string{"--turn-secret-file=" + empty}, []string{"turn-secret-file", "empty"}},
		{"three secrets", []string{"--turn-secret-file=" + three}, []string{"at most two"}},
		{"short secret", []string{"--turn-secret=short"}, []string{"turn-secret", "16"}},
		{"secret and file", []string{"--turn-secret=0123456789abcdef0123", "--turn-secret-file=" + three}, []string{"turn-secret", "turn-secret-file"}},
		{"bad ports", []string{"--turn-ports=60000-50000"}, []string{"turn-ports"}},
		{"privileged ports", []string{"--turn-ports=80-90"}, []string{"turn-ports"}},
		{"bad allow list", []string{"--turn-allow-peers=10.0.0.0/33"}, []string{"turn-allow-peers", "10.0.0.0/33"}},
		{"bad relay ip", []string{"--turn-relay-ip=relay.example"}, []string{"turn-relay-ip"}},
		{"bad public ip", []string{"--turn-public-ip=1.2.3"}, []string{"turn-public-ip"}},
		{"ttl over the cap", []string{"--turn-ttl=2h"}, []string{"turn-ttl-max"}},
		{"ttl too short", []string{"--turn-ttl=10s"}, []string{"turn-ttl"}},
		{"zero quota", []string{"--turn-quota=0"}, []string{"turn-quota"}},
		{"negative bandwidth", []string{"--turn-bandwidth=-1"}, []string{"turn-bandwidth"}},
		{"not a bool", []string{"--turn-tcp=maybe"}, []string{"turn-tcp"}},
		{"TURNS without a certificate", []string{"--turn-tls-addr=:5349"}, []string{"turn-tls-addr", "certificate"}},
		{"external without secret", []string{"--turn=external", "--turn-urls=turn:t.example:3478"}, []string{"secret"}},
		{"external without urls", []string{"--turn=external", "--turn-secret=0123456789abcdef0123"}, []string{"turn-urls"}},
		{"external url not turn", []string{"--turn=external", "--turn-secret=0123456789abcdef0123", "--turn-urls=https://t.example"}, []string{"turn-urls", "https://t.example"}},
		{"metrics-addr without port", []string{"--metrics-addr=localhost"}, []string{"metrics-addr"}},
		{"gc-percent too low", []string{"--gc-percent=10"}, []string{"gc-percent", "10"}},
		{"gc-percent negative", []string{"--gc-percent=-1"}, []string{"gc-percent"}},
		{"debug-pprof without metrics-addr", []string{"--debug-pprof"}, []string{"debug-pprof", "loopback"}},
		{"debug-pprof on all addresses", []string{"--debug-pprof", "--metrics-addr=:9090"}, []string{"debug-pprof", "loopback"}},
		{"debug-pprof on a public address", []string{"--debug-pprof", "--metrics-addr=192.0.2.7:9090"}, []string{"debug-pprof", "loopback"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.args, nil, "")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestTURNSecrets(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "secret")
	os.WriteFile(f, []byte("0123456789abcdef0123\n\nabcdefghijklmnopqrst\n"), 0o600)
	cfg, err := parse(t, []string{"--turn-secret-file=" + f, "--turn-allow-peers=198.18.0.0/15, 10.9.8.7", "--turn-ports=40000-40010"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := cfg.TURNSecrets()
	if err != nil || len(secrets) != 2 || string(secrets[0]) != "0123456789abcdef0123" || string(secrets[1]) != "abcdefghijklmnopqrst" {
		t.Errorf("secrets %q, %v", secrets, err)
	}
	allow, _ := cfg.TURNAllowList()
	if len(allow) != 2 || allow[0].String() != "198.18.0.0/15" || allow[1].String() != "10.9.8.7/32" {
		t.Errorf("allow list %v", allow)
	}
	if lo, hi, _ := cfg.TURNPortRange(); lo != 40000 || hi != 40010 {
		t.Errorf("ports %d-%d", lo, hi)
	}
	if cfg.TURN != "embedded" || !cfg.TURNTCP || cfg.TURNTTL != 10*time.Minute || cfg.TURNTTLMax != time.Hour {
		t.Errorf("defaults: %+v", cfg)
	}
	// TURNS defaults to the web server's certificate.
	cfg, err = parse(t, []string{"--turn-tls-addr=:443", "--tls-cert=c.pem", "--tls-key=k.pem", "--http-addr=0.0.0.0:8443"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c, k := cfg.TURNTLSFiles(); c != "c.pem" || k != "k.pem" {
		t.Errorf("TURNS files %q %q", c, k)
	}
}
