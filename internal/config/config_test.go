package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// parse runs the FlagSet of a "serve" command over args and env, with an optional config
// file holding fileBody ("" = no file).
func parse(t *testing.T, args, env []string, fileBody string) (config.Config, error) {
	t.Helper()
	if fileBody != "" {
		path := filepath.Join(t.TempDir(), "bedside.json")
		if err := os.WriteFile(path, []byte(fileBody), 0o600); err != nil {
			t.Fatal(err)
		}
		env = append(env, "BEDSIDE_CONFIG="+path)
	}
	return config.NewFlagSet("serve", io.Discard).Parse(args, env)
}

func TestDefaultsValidateAndDerive(t *testing.T) {
	cfg := config.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	if cfg.PublicURL != "http://127.0.0.1:8080" {
		t.Errorf("PublicURL = %q, want http://127.0.0.1:8080", cfg.PublicURL)
	}
	if cfg.ICEHost != "127.0.0.1" {
		t.Errorf("ICEHost = %q, want 127.0.0.1", cfg.ICEHost)
	}
	if cfg.TLS() {
		t.Error("TLS on by default")
	}

	// Parsing nothing gives the same.
	got, err := parse(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if got != cfg {
		t.Errorf("Parse(nothing) = %+v, want the validated defaults %+v", got, cfg)
	}
}

func TestPrecedence(t *testing.T) {
	file := `{"log-level":"warn","session-idle":"20m"}`
	for _, tc := range []struct {
		name      string
		args      []string
		env       []string
		file      string
		wantLevel string
		wantIdle  time.Duration
	}{
		{name: "default", wantLevel: "info", wantIdle: 15 * time.Minute},
		{name: "file over default", file: file, wantLevel: "warn", wantIdle: 20 * time.Minute},
		{
			name: "env over file", file: file,
			env:       []string{"BEDSIDE_LOG_LEVEL=error", "BEDSIDE_SESSION_IDLE=30m"},
			wantLevel: "error", wantIdle: 30 * time.Minute,
		},
		{
			name: "flag over env and file", file: file,
			args:      []string{"--log-level=debug", "--session-idle", "40m"},
			env:       []string{"BEDSIDE_LOG_LEVEL=error", "BEDSIDE_SESSION_IDLE=30m"},
			wantLevel: "debug", wantIdle: 40 * time.Minute,
		},
		{
			name: "flag over file without env", file: file,
			args:      []string{"--log-level=debug", "--session-idle=40m"},
			wantLevel: "debug", wantIdle: 40 * time.Minute,
		},
		{
			name:      "env over default without file",
			env:       []string{"BEDSIDE_LOG_LEVEL=error", "BEDSIDE_SESSION_IDLE=30m"},
			wantLevel: "error", wantIdle: 30 * time.Minute,
		},
		{
			name: "an invalid env value under a flag is not used", // the flag decides
			args: []string{"--session-idle=40m"}, env: []string{"BEDSIDE_SESSION_IDLE=soon"},
			wantLevel: "info", wantIdle: 40 * time.Minute,
		},
		{
			name:      "other variables in the environment are ignored",
			env:       []string{"HOME=/root", "PATH=/bin", "BEDSIDE", "NOT_BEDSIDE_X=1"},
			wantLevel: "info", wantIdle: 15 * time.Minute,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(t, tc.args, tc.env, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.LogLevel != tc.wantLevel {
				t.Errorf("log-level = %q, want %q", cfg.LogLevel, tc.wantLevel)
			}
			if cfg.SessionIdle != tc.wantIdle {
				t.Errorf("session-idle = %v, want %v", cfg.SessionIdle, tc.wantIdle)
			}
		})
	}
}

func TestConfigFileByFlagOverEnv(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	os.WriteFile(a, []byte(`{"log-format":"text"}`), 0o600)
	os.WriteFile(b, []byte(`{"log-format":"json","log-level":"debug"}`), 0o600)
	cfg, err := config.NewFlagSet("serve", io.Discard).Parse([]string{"--config", a}, []string{"BEDSIDE_CONFIG=" + b})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConfigFile != a || cfg.LogFormat != "text" || cfg.LogLevel != "info" {
		t.Errorf("got file %q format %q level %q; want the flag's file %q only (text, info)", cfg.ConfigFile, cfg.LogFormat, cfg.LogLevel, a)
	}
}

// TestErrors: every bad input stops start-up with an error that names what is wrong.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		file string
		want []string // substrings of the error
	}{
		{name: "unknown key in file", file: `{"http-adr":"127.0.0.1:1"}`, want: []string{`"http-adr"`, "unknown key"}},
		{name: "config key in file", file: `{"config":"other.json"}`, want: []string{`"config"`, "unknown key"}},
		{name: "unknown env var", env: []string{"BEDSIDE_HTTP_ADR=x"}, want: []string{"BEDSIDE_HTTP_ADR", "unknown"}},
		{name: "bare env prefix", env: []string{"BEDSIDE_=x"}, want: []string{"BEDSIDE_", "unknown"}},
		{name: "unknown flag", args: []string{"--http-adr=x"}, want: []string{"http-adr"}},

		{name: "bad duration flag", args: []string{"--link-ttl=tomorrow"}, want: []string{"link-ttl", "tomorrow"}},
		{name: "bad duration env", env: []string{"BEDSIDE_SESSION_IDLE=15"}, want: []string{"BEDSIDE_SESSION_IDLE", `"15"`}},
		{name: "bad duration file", file: `{"shutdown-timeout":"ten seconds"}`, want: []string{`"shutdown-timeout"`, "ten seconds"}},
		{name: "number for a duration in file", file: `{"link-ttl":3600}`, want: []string{`"link-ttl"`, `"3600"`}},
		{name: "bool in file", file: `{"log-level":true}`, want: []string{"log-level", `"true"`}},
		{name: "number for an address in file", file: `{"http-addr":8080}`, want: []string{"http-addr", `"8080"`}},
		{name: "object value in file", file: `{"data-dir":{"path":"/x"}}`, want: []string{`"data-dir"`, "string, number or boolean"}},
		{name: "array value in file", file: `{"data-dir":["/x"]}`, want: []string{`"data-dir"`, "string, number or boolean"}},
		{name: "null value in file", file: `{"data-dir":null}`, want: []string{`"data-dir"`, "string, number or boolean"}},

		{name: "missing config file", env: []string{"BEDSIDE_CONFIG=/nonexistent/bedside.json"}, want: []string{"config file", "/nonexistent/bedside.json"}},
		{name: "file is an array", file: `["http-addr"]`, want: []string{"not a JSON object"}},
		{name: "file is a string", file: `"http-addr"`, want: []string{"not a JSON object"}},
		{name: "file is null", file: `null`, want: []string{"not a JSON object"}},
		{name: "file is broken JSON", file: `{"http-addr":`, want: []string{"not a JSON object"}},
		{name: "file is blank", file: " \n", want: []string{"not a JSON object"}},
		// A second object would otherwise be ignored silently, and with it the settings in it.
		{name: "file has two objects", file: `{"log-level":"warn"} {"log-format":"text"}`, want: []string{"not a JSON object"}},
		{name: "file has trailing garbage", file: `{"log-level":"warn"}}`, want: []string{"not a JSON object"}},

		{name: "http-addr without port", args: []string{"--http-addr=localhost"}, want: []string{"http-addr", "localhost"}},
		{name: "public-url with path", args: []string{"--public-url=https://clinic.example/bedside"}, want: []string{"public-url", "no path"}},
		{name: "public-url with query", args: []string{"--public-url=https://clinic.example?x=1"}, want: []string{"public-url"}},
		{name: "public-url not http", args: []string{"--public-url=ftp://clinic.example"}, want: []string{"public-url"}},
		{name: "public-url without scheme", args: []string{"--public-url=clinic.example"}, want: []string{"public-url"}},
		{name: "log-level", args: []string{"--log-level=verbose"}, want: []string{"log-level", "verbose"}},
		{name: "log-format", args: []string{"--log-format=xml"}, want: []string{"log-format", "xml"}},
		{name: "stun-addr without port", args: []string{"--stun-addr=3478"}, want: []string{"stun-addr", "3478"}},
		{name: "tls-cert without tls-key", args: []string{"--tls-cert=cert.pem"}, want: []string{"tls-cert", "tls-key"}},
		{name: "tls-key without tls-cert", env: []string{"BEDSIDE_TLS_KEY=key.pem"}, want: []string{"tls-cert", "tls-key"}},
		{name: "empty data-dir", args: []string{"--data-dir="}, want: []string{"data-dir"}},
		{name: "link-ttl too short", args: []string{"--link-ttl=30s"}, want: []string{"link-ttl", "at least"}},
		{name: "negative shutdown-timeout", args: []string{"--shutdown-timeout=-1s"}, want: []string{"shutdown-timeout"}},
		{name: "idle longer than lifetime", args: []string{"--session-idle=2h", "--session-lifetime=1h"}, want: []string{"session-idle", "session-lifetime"}},
		{name: "require-mfa not a bool", args: []string{"--require-mfa=sometimes"}, want: []string{"require-mfa", "sometimes"}},
		{name: "require-mfa not a bool in env", env: []string{"BEDSIDE_REQUIRE_MFA=yes please"}, want: []string{"BEDSIDE_REQUIRE_MFA"}},
		{name: "retention too short", args: []string{"--retention=1h"}, want: []string{"retention", "24h"}},
		{name: "negative retention", args: []string{"--retention=-24h"}, want: []string{"retention"}},
		{name: "checkpoint interval too short", args: []string{"--audit-checkpoint-every=10ms"}, want: []string{"audit-checkpoint-every"}},
		{name: "allowed origin with path", args: []string{"--allowed-origins=https://portal.example/x"}, want: []string{"allowed-origins", "portal.example/x"}},
		{name: "allowed origin without scheme", args: []string{"--allowed-origins=portal.example"}, want: []string{"allowed-origins"}},
		{name: "trusted proxy not an address", args: []string{"--trusted-proxies=10.0.0.5,proxy.clinic"}, want: []string{"trusted-proxies", "proxy.clinic"}},
		{name: "acme and tls files", args: []string{"--acme-domains=visits.clinic.example", "--tls-cert=c.pem", "--tls-key=k.pem"}, want: []string{"acme-domains", "tls-cert"}},
		{name: "acme with http public-url", args: []string{"--acme-domains=visits.clinic.example", "--public-url=http://visits.clinic.example"}, want: []string{"public-url", "https"}},
		{name: "acme public-url host not a domain", args: []string{"--acme-domains=visits.clinic.example", "--public-url=https://other.example"}, want: []string{"public-url", "acme-domains"}},
		{name: "acme domain with a port", args: []string{"--acme-domains=visits.clinic.example:443", "--public-url=https://visits.clinic.example"}, want: []string{"acme-domains"}},
		{name: "acme wildcard", args: []string{"--acme-domains=*.clinic.example", "--public-url=https://visits.clinic.example"}, want: []string{"acme-domains"}},
		{name: "acme directory not https", args: []string{"--acme-domains=visits.clinic.example", "--public-url=https://visits.clinic.example", "--acme-directory=http://ca.example/dir"}, want: []string{"acme-directory"}},
		{name: "acme email without domains", args: []string{"--acme-email=ops@clinic.example"}, want: []string{"acme-domains"}},
		{name: "acme ca file without domains", args: []string{"--acme-ca-file=ca.pem"}, want: []string{"acme-ca-file", "acme-domains"}},
		{name: "acme bad http addr", args: []string{"--acme-domains=visits.clinic.example", "--public-url=https://visits.clinic.example", "--acme-http-addr=80"}, want: []string{"acme-http-addr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(t, tc.args, tc.env, tc.file)
			if err == nil {
				t.Fatalf("no error; got %+v", cfg)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestValidValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		file  string
		check func(c config.Config) string // "" = ok, else what is wrong
	}{
		{
			name: "any address listens, links use loopback", args: []string{"--http-addr=0.0.0.0:9000"},
			check: func(c config.Config) string {
				return want(c.PublicURL == "http://127.0.0.1:9000" && c.ICEHost == "127.0.0.1", "public-url %q ice-host %q", c.PublicURL, c.ICEHost)
			},
		},
		{
			name: "IPv6 any address", args: []string{"--http-addr=[::]:8080"},
			check: func(c config.Config) string {
				return want(c.PublicURL == "http://127.0.0.1:8080", "public-url %q", c.PublicURL)
			},
		},
		{
			name: "TLS derives https", args: []string{"--tls-cert=c.pem", "--tls-key=k.pem", "--http-addr=:8443"},
			check: func(c config.Config) string {
				return want(c.TLS() && c.PublicURL == "https://127.0.0.1:8443", "tls %v public-url %q", c.TLS(), c.PublicURL)
			},
		},
		{
			name: "public-url trailing slash trimmed, ice-host from it", args: []string{"--public-url=https://clinic.example:8443/"},
			check: func(c config.Config) string {
				return want(c.PublicURL == "https://clinic.example:8443" && c.ICEHost == "clinic.example", "public-url %q ice-host %q", c.PublicURL, c.ICEHost)
			},
		},
		{
			name: "explicit ice-host kept", args: []string{"--public-url=https://clinic.example", "--ice-host=203.0.113.7"},
			check: func(c config.Config) string {
				return want(c.ICEHost == "203.0.113.7", "ice-host %q", c.ICEHost)
			},
		},
		{
			name: "stun off", args: []string{"--stun-addr=off"},
			check: func(c config.Config) string { return want(c.STUNAddr == "off", "stun-addr %q", c.STUNAddr) },
		},
		{
			name: "acme turns TLS on, cache under the data dir", args: []string{"--acme-domains=visits.clinic.example, portal.clinic.example", "--public-url=https://visits.clinic.example", "--data-dir=/srv/b"},
			check: func(c config.Config) string {
				return want(c.TLS() && c.ACMECacheDir == "/srv/b/acme" && len(c.ACMEList()) == 2 && c.ACMEList()[1] == "portal.clinic.example", "tls %v cache %q domains %q", c.TLS(), c.ACMECacheDir, c.ACMEList())
			},
		},
		{
			name: "key files derive from the data dir", args: []string{"--data-dir=/srv/b"},
			check: func(c config.Config) string {
				return want(c.DataKeyFile == "/srv/b/data.key" && c.AuditKeyFile == "/srv/b/audit-signing.key" && c.AuditCheckpointFile == "/srv/b/audit-checkpoints.txt",
					"%q %q %q", c.DataKeyFile, c.AuditKeyFile, c.AuditCheckpointFile)
			},
		},
		{
			name: "require-mfa can be turned off", args: []string{"--require-mfa=false"},
			check: func(c config.Config) string { return want(!c.RequireMFA, "require-mfa %v", c.RequireMFA) },
		},
		{
			name: "allowed origins", file: `{"allowed-origins":"https://portal.clinic.example, http://127.0.0.1:9000"}`,
			check: func(c config.Config) string {
				o := c.Origins()
				return want(len(o) == 2 && o[0] == "https://portal.clinic.example", "origins %q", o)
			},
		},
		{
			name: "number zero is a duration", file: `{"shutdown-timeout":0}`,
			check: func(c config.Config) string {
				return want(c.ShutdownTimeout == 0, "shutdown-timeout %v", c.ShutdownTimeout)
			},
		},
		{
			name: "every value type in the file", file: `{"http-addr":"127.0.0.1:9999","link-ttl":"48h","log-format":"text","data-dir":"/var/lib/bedside"}`,
			check: func(c config.Config) string {
				return want(c.HTTPAddr == "127.0.0.1:9999" && c.LinkTTL == 48*time.Hour && c.LogFormat == "text" && c.DataDir == "/var/lib/bedside", "%+v", c)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(t, tc.args, nil, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(cfg); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func want(ok bool, format string, args ...any) string {
	if ok {
		return ""
	}
	return "got " + fmt.Sprintf(format, args...)
}

// TestEveryFieldHasAnOption: a Config field that no option sets could never be configured.
// Every option is set to a non-default value through the environment; every field must
// then differ from its default.
func TestEveryFieldHasAnOption(t *testing.T) {
	file := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(file, []byte(`{}`), 0o600)
	secretFile := filepath.Join(t.TempDir(), "turn-secret")
	os.WriteFile(secretFile, []byte("0123456789abcdef0123\n"), 0o600)
	env := []string{
		"BEDSIDE_CONFIG=" + file,
		"BEDSIDE_HTTP_ADDR=127.0.0.1:9000",
		"BEDSIDE_PUBLIC_URL=https://clinic.example",
		"BEDSIDE_DATA_DIR=/srv/bedside",
		"BEDSIDE_TLS_CERT=c.pem",
		"BEDSIDE_TLS_KEY=k.pem",
		"BEDSIDE_STUN_ADDR=:3479",
		"BEDSIDE_ICE_HOST=203.0.113.7",
		"BEDSIDE_TURN=external",
		"BEDSIDE_TURN_TCP=false",
		"BEDSIDE_TURN_TLS_ADDR=:5349",
		"BEDSIDE_TURN_TLS_CERT=turn-c.pem",
		"BEDSIDE_TURN_TLS_KEY=turn-k.pem",
		"BEDSIDE_TURN_UDP_SOCKETS=4",
		"BEDSIDE_TURN_RELAY_IP=10.0.0.5",
		"BEDSIDE_TURN_PUBLIC_IP=203.0.113.9",
		"BEDSIDE_TURN_PORTS=40000-40100",
		"BEDSIDE_TURN_SECRET_FILE=" + secretFile,
		"BEDSIDE_TURN_TTL=5m",
		"BEDSIDE_TURN_CHECK_TTL=1m",
		"BEDSIDE_TURN_TTL_MAX=30m",
		"BEDSIDE_TURN_ALLOW_PEERS=10.1.0.0/16",
		"BEDSIDE_TURN_TCP_RELAY=true",
		"BEDSIDE_TURN_QUOTA=3",
		"BEDSIDE_TURN_QUOTA_TOTAL=50",
		"BEDSIDE_TURN_BANDWIDTH=2000",
		"BEDSIDE_TURN_URLS=turn:turn.clinic.example:3478",
		"BEDSIDE_METRICS_ADDR=127.0.0.1:9090",
		"BEDSIDE_DEBUG_PPROF=true",
		"BEDSIDE_SFU_UDP_ADDR=0.0.0.0:4479",
		"BEDSIDE_SFU_PUBLIC_IP=203.0.113.7",
		"BEDSIDE_GC_PERCENT=400",
		"BEDSIDE_LINK_TTL=48h",
		"BEDSIDE_SESSION_IDLE=10m",
		"BEDSIDE_SESSION_LIFETIME=8h",
		"BEDSIDE_SHUTDOWN_TIMEOUT=30s",
		"BEDSIDE_LOG_LEVEL=debug",
		"BEDSIDE_LOG_FORMAT=text",
		"BEDSIDE_REQUIRE_MFA=false",
		"BEDSIDE_ALLOWED_ORIGINS=https://portal.clinic.example",
		"BEDSIDE_TRUSTED_PROXIES=10.0.0.5, 192.168.0.0/24",
		"BEDSIDE_DATA_KEY_FILE=/etc/bedside/data.key",
		"BEDSIDE_RETENTION=720h",
		"BEDSIDE_AUDIT_KEY_FILE=/etc/bedside/audit.key",
		"BEDSIDE_AUDIT_CHECKPOINT_FILE=/var/log/bedside/checkpoints",
		"BEDSIDE_AUDIT_CHECKPOINT_EVERY=5m",
		"BEDSIDE_ACME_HTTP_ADDR=:8081",
	}
	// ACME and certificate files exclude each other: the ACME options are set in a second
	// round, without the files.
	acme := []string{
		"BEDSIDE_CONFIG=" + file,
		"BEDSIDE_PUBLIC_URL=https://clinic.example",
		"BEDSIDE_ACME_DOMAINS=clinic.example",
		"BEDSIDE_ACME_EMAIL=ops@clinic.example",
		"BEDSIDE_ACME_DIRECTORY=https://ca.example/directory",
		"BEDSIDE_ACME_CACHE_DIR=/srv/acme",
		"BEDSIDE_ACME_CA_FILE=/etc/bedside/acme-ca.pem",
	}
	cfg, err := config.NewFlagSet("serve", io.Discard).Parse(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	acfg, err := config.NewFlagSet("serve", io.Discard).Parse(nil, acme)
	if err != nil {
		t.Fatal(err)
	}
	def := config.Default()
	// turn-secret and turn-secret-file exclude each other: the secret is set on its own.
	one, err := config.NewFlagSet("serve", io.Discard).Parse(nil, []string{"BEDSIDE_TURN_SECRET=0123456789abcdef0123"})
	if err != nil || one.TURNSecret == "" {
		t.Errorf("BEDSIDE_TURN_SECRET: %q, %v", one.TURNSecret, err)
	}
	cfg.TURNSecret = one.TURNSecret
	got, orig, agot := reflect.ValueOf(cfg), reflect.ValueOf(def), reflect.ValueOf(acfg)
	for i := range got.NumField() {
		if got.Field(i).Interface() == orig.Field(i).Interface() && agot.Field(i).Interface() == orig.Field(i).Interface() {
			t.Errorf("Config.%s was not set by any BEDSIDE_ variable", got.Type().Field(i).Name)
		}
	}
}

// TestSecureDefaults: with no options at all, clinicians and admins need a second factor,
// and the trail is checkpointed every minute.
func TestSecureDefaults(t *testing.T) {
	cfg, err := parse(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.RequireMFA {
		t.Error("require-mfa is off by default")
	}
	if cfg.AuditCheckpointEvery != time.Minute || cfg.Retention != 0 || cfg.AllowedOrigins != "" {
		t.Errorf("checkpoint every %v, retention %v, origins %q", cfg.AuditCheckpointEvery, cfg.Retention, cfg.AllowedOrigins)
	}
}

// options is every setting, as a user reads it in the docs: the flag and its variable.
var options = []struct{ flag, env string }{
	{"config", "BEDSIDE_CONFIG"},
	{"http-addr", "BEDSIDE_HTTP_ADDR"},
	{"public-url", "BEDSIDE_PUBLIC_URL"},
	{"data-dir", "BEDSIDE_DATA_DIR"},
	{"tls-cert", "BEDSIDE_TLS_CERT"},
	{"tls-key", "BEDSIDE_TLS_KEY"},
	{"stun-addr", "BEDSIDE_STUN_ADDR"},
	{"ice-host", "BEDSIDE_ICE_HOST"},
	{"turn", "BEDSIDE_TURN"},
	{"turn-tcp", "BEDSIDE_TURN_TCP"},
	{"turn-tls-addr", "BEDSIDE_TURN_TLS_ADDR"},
	{"turn-tls-cert", "BEDSIDE_TURN_TLS_CERT"},
	{"turn-tls-key", "BEDSIDE_TURN_TLS_KEY"},
	{"turn-udp-sockets", "BEDSIDE_TURN_UDP_SOCKETS"},
	{"turn-relay-ip", "BEDSIDE_TURN_RELAY_IP"},
	{"turn-public-ip", "BEDSIDE_TURN_PUBLIC_IP"},
	{"turn-ports", "BEDSIDE_TURN_PORTS"},
	{"turn-secret", "BEDSIDE_TURN_SECRET"},
	{"turn-secret-file", "BEDSIDE_TURN_SECRET_FILE"},
	{"turn-ttl", "BEDSIDE_TURN_TTL"},
	{"turn-check-ttl", "BEDSIDE_TURN_CHECK_TTL"},
	{"turn-ttl-max", "BEDSIDE_TURN_TTL_MAX"},
	{"turn-allow-peers", "BEDSIDE_TURN_ALLOW_PEERS"},
	{"turn-tcp-relay", "BEDSIDE_TURN_TCP_RELAY"},
	{"turn-quota", "BEDSIDE_TURN_QUOTA"},
	{"turn-quota-total", "BEDSIDE_TURN_QUOTA_TOTAL"},
	{"turn-bandwidth", "BEDSIDE_TURN_BANDWIDTH"},
	{"turn-urls", "BEDSIDE_TURN_URLS"},
	{"metrics-addr", "BEDSIDE_METRICS_ADDR"},
	{"debug-pprof", "BEDSIDE_DEBUG_PPROF"},
	{"sfu-udp-addr", "BEDSIDE_SFU_UDP_ADDR"},
	{"sfu-public-ip", "BEDSIDE_SFU_PUBLIC_IP"},
	{"gc-percent", "BEDSIDE_GC_PERCENT"},
	{"link-ttl", "BEDSIDE_LINK_TTL"},
	{"session-idle", "BEDSIDE_SESSION_IDLE"},
	{"session-lifetime", "BEDSIDE_SESSION_LIFETIME"},
	{"shutdown-timeout", "BEDSIDE_SHUTDOWN_TIMEOUT"},
	{"log-level", "BEDSIDE_LOG_LEVEL"},
	{"log-format", "BEDSIDE_LOG_FORMAT"},
	{"require-mfa", "BEDSIDE_REQUIRE_MFA"},
	{"allowed-origins", "BEDSIDE_ALLOWED_ORIGINS"},
	{"trusted-proxies", "BEDSIDE_TRUSTED_PROXIES"},
	{"data-key-file", "BEDSIDE_DATA_KEY_FILE"},
	{"retention", "BEDSIDE_RETENTION"},
	{"audit-key-file", "BEDSIDE_AUDIT_KEY_FILE"},
	{"audit-checkpoint-file", "BEDSIDE_AUDIT_CHECKPOINT_FILE"},
	{"audit-checkpoint-every", "BEDSIDE_AUDIT_CHECKPOINT_EVERY"},
	{"acme-domains", "BEDSIDE_ACME_DOMAINS"},
	{"acme-email", "BEDSIDE_ACME_EMAIL"},
	{"acme-directory", "BEDSIDE_ACME_DIRECTORY"},
	{"acme-cache-dir", "BEDSIDE_ACME_CACHE_DIR"},
	{"acme-http-addr", "BEDSIDE_ACME_HTTP_ADDR"},
	{"acme-ca-file", "BEDSIDE_ACME_CA_FILE"},
}

func TestHelpListsEveryOption(t *testing.T) {
	var out bytes.Buffer
	fs := config.NewFlagSet("serve", &out)
	fs.Bool("dry-run", false, "a subcommand's own flag")
	fs.PrintUsage("serve", "")
	help := out.String()

	for _, o := range options {
		if config.EnvName(o.flag) != o.env {
			t.Errorf("EnvName(%q) = %q, want %q", o.flag, config.EnvName(o.flag), o.env)
		}
		if !strings.Contains(help, "--"+o.flag+"  ["+o.env+"]\n") {
			t.Errorf("help does not list --%s with [%s]", o.flag, o.env)
		}
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n != len(options)+1 {
		t.Errorf("the flag set has %d flags, the test knows %d: add the new option to this test and the docs", n, len(options)+1)
	}
	if !strings.Contains(help, "--dry-run\n") || strings.Contains(help, "BEDSIDE_DRY_RUN") {
		t.Error("a subcommand's own flag must be listed without an environment variable")
	}
	for _, def := range []string{`(default "127.0.0.1:8080")`, `(default "24h0m0s")`, `(default "info")`} {
		if !strings.Contains(help, def) {
			t.Errorf("help does not show the default %s", def)
		}
	}

}

// TestHelpGolden pins the help text users read in `bedside serve --help`.
func TestHelpGolden(t *testing.T) {
	var out bytes.Buffer
	config.NewFlagSet("serve", &out).PrintUsage("serve", "")
	golden := filepath.Join("testdata", "golden", "help.txt")
	if *update {
		os.MkdirAll(filepath.Dir(golden), 0o755)
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if out.String() != string(want) {
		t.Errorf("help text changed (go test -update to accept):\n--- got\n%s\n--- want\n%s", out.String(), want)
	}
}

func TestHelpFlag(t *testing.T) {
	var out bytes.Buffer
	_, err := config.NewFlagSet("serve", &out).Parse([]string{"--help"}, nil)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: err = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(out.String(), "Usage: bedside serve") || !strings.Contains(out.String(), "BEDSIDE_HTTP_ADDR") {
		t.Errorf("--help printed:\n%s", out.String())
	}
}

// FuzzConfigFile: no file content crashes start-up, only a single JSON object is accepted,
// and what is accepted is a valid configuration (Validate holds again on the result, so
// the derived values are stable). Corpus: testdata/fuzz/FuzzConfigFile.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"http-addr":"0.0.0.0:9000","public-url":"https://clinic.example/","link-ttl":"48h"}`,
		`{"shutdown-timeout":0,"log-level":"debug","log-format":"text"}`,
		`{"tls-cert":"c.pem","tls-key":"k.pem","stun-addr":"off","ice-host":"203.0.113.7"}`,
		`null`, `[]`, `{"config":"x"}`,
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "bedside.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.NewFlagSet("serve", io.Discard).Parse(nil, []string{"BEDSIDE_CONFIG=" + path})
		if err != nil {
			return
		}
		if !json.Valid(data) || !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
			t.Fatalf("accepted %q, which is not one JSON object", data)
		}
		again := cfg
		if err := again.Validate(); err != nil || again != cfg {
			t.Fatalf("accepted %q, but Validate on the result: %v, %+v -> %+v", data, err, cfg, again)
		}
	})
}
