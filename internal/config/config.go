// Package config holds Bedside's settings: their defaults, and how a flag, an environment
// variable (BEDSIDE_...) or a config file sets them. Each option is declared once, in
// options(), and that one table drives the flags, the environment, the file and the help.
//
// Precedence: command-line flag > environment > config file > default. Unknown keys in the
// file or the environment and invalid values stop start-up with a message naming the key.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment variable Bedside reads.
const EnvPrefix = "BEDSIDE_"

// Config is every setting of a Bedside process.
type Config struct {
	// ConfigFile is the JSON file the other settings were read from ("" = none).
	ConfigFile string

	HTTPAddr  string // listen address of the web server
	PublicURL string // the address people use, as put into links; derived from HTTPAddr when empty
	DataDir   string // holds the SQLite database
	TLSCert   string // certificate file (PEM); TLS is on when both TLSCert and TLSKey are set
	TLSKey    string // private key file (PEM)

	STUNAddr string // UDP (and TCP) listen address of the embedded STUN/TURN server; "off" disables it
	ICEHost  string // host name or address put into ICE server URLs; derived from PublicURL when empty

	// The TURN relay (docs/operations.md, "TURN relay").
	TURN              string        // embedded, external or off
	TURNTCP           bool          // TURN over TCP on stun-addr's port
	TURNTLSAddr       string        // TURNS listen address ("" = none)
	TURNTLSCert       string        // TURNS certificate (default: tls-cert)
	TURNTLSKey        string        // TURNS key (default: tls-key)
	TURNUDPSockets    int           // UDP sockets sharing stun-addr (SO_REUSEPORT); 0 = one per core
	TURNRelayIP       string        // address relay sockets bind to ("" = the stun-addr host, or all)
	TURNPublicIP      string        // relay address told to clients (1:1 NAT)
	TURNPorts         string        // relay port range "min-max"
	TURNSecret        string        // shared secret (current[,previous]); or
	TURNSecretFile    string        // a file of one or two lines: current, previous
	TURNTTL           time.Duration // lifetime of a participant's credential
	TURNCheckTTL      time.Duration // lifetime of the device check's credential
	TURNTTLMax        time.Duration // the longest credential the relay accepts
	TURNAllowPeers    string        // CIDR list relayed to despite the denied ranges
	TURNTCPRelay      bool          // RFC 6062 TCP allocations
	TURNQuota         int           // allocations per participant
	TURNQuotaTotal    int           // allocations in all
	TURNBandwidthKbps int           // per allocation and direction; 0 = unlimited
	TURNURLs          string        // external mode: the service's URLs, comma-separated

	// The SFU (docs/operations.md, "SFU").
	SFUUDPAddr  string // UDP listen address of every SFU peer connection; "off" keeps all calls peer to peer
	SFUPublicIP string // address announced instead of the host's (1:1 NAT)
	// GCPercent is the Go GC's target (GOGC) for serve; 0 leaves it to Go. The GOGC
	// environment variable, when set, wins.
	GCPercent int

	MetricsAddr string // Prometheus /metrics listen address ("" = off)
	DebugPprof  bool   // serve Go's profiles (/debug/pprof/) on MetricsAddr, which must be loopback

	LinkTTL         time.Duration // patient links expire this long after the scheduled time
	SessionIdle     time.Duration // a sign-in session ends after this long without a request
	SessionLifetime time.Duration // a sign-in session ends this long after sign-in, whatever happens
	ShutdownTimeout time.Duration // how long SIGTERM waits for connections to close

	LogLevel  string // debug, info, warn, error
	LogFormat string // json or text

	// Security (docs/security.md).
	RequireMFA           bool          // clinicians and admins must use a second factor
	AllowedOrigins       string        // comma-separated extra origins (scheme://host[:port]) trusted for state changes and WebSockets
	TrustedProxies       string        // comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For is believed
	DataKeyFile          string        // AES-256 key encrypting patient fields; default <data-dir>/data.key
	Retention            time.Duration // visit data older than this is deleted (0: kept)
	AuditKeyFile         string        // Ed25519 checkpoint signing key; default <data-dir>/audit-signing.key
	AuditCheckpointFile  string        // signed checkpoints are appended here; default <data-dir>/audit-checkpoints.txt
	AuditCheckpointEvery time.Duration // how often a checkpoint is written while the trail grows

	ACMEDomains  string // comma-separated host names to get certificates for from an ACME CA (TLS without files)
	ACMEEmail    string // contact address given to the CA
	ACMEDir      string // the CA's directory URL (default Let's Encrypt)
	ACMECacheDir string // where certificates and the account key are kept; default <data-dir>/acme
	ACMEHTTPAddr string // listen address answering HTTP-01 challenges and redirecting to https ("off": none)
	ACMECAFile   string // PEM file of the CA certificates the ACME directory's HTTPS is checked against (a private CA); default the system's
}

// option is one setting: its name (the flag, the file key, and after upper-casing the
// environment variable), help text, default and where it is stored.
type option struct {
	name  string
	usage string
	value flag.Value
}

func (c *Config) options() []option {
	return []option{
		{"config", "config file (JSON object of the settings below, by flag name)", (*stringValue)(&c.ConfigFile)},
		{"http-addr", "HTTP listen address", (*stringValue)(&c.HTTPAddr)},
		{"public-url", "URL people use to reach this server, put into visit links (default: http://<http-addr>)", (*stringValue)(&c.PublicURL)},
		{"data-dir", "directory for the SQLite database", (*stringValue)(&c.DataDir)},
		{"tls-cert", "TLS certificate file (PEM); TLS is on when tls-cert and tls-key are set", (*stringValue)(&c.TLSCert)},
		{"tls-key", "TLS private key file (PEM)", (*stringValue)(&c.TLSKey)},
		{"stun-addr", `UDP and TCP listen address of the embedded STUN/TURN server, or "off"`, (*stringValue)(&c.STUNAddr)},
		{"ice-host", "host put into ICE server URLs given to browsers (default: the host of public-url)", (*stringValue)(&c.ICEHost)},
		{"turn", "TURN relay: embedded (in this process, on stun-addr), external (a coturn with use-auth-secret, at turn-urls) or off", (*stringValue)(&c.TURN)},
		{"turn-tcp", "accept TURN over TCP on stun-addr's port (for networks that block UDP)", (*boolValue)(&c.TURNTCP)},
		{"turn-tls-addr", `TURN over TLS (TURNS) listen address, e.g. ":5349" or ":443" (default: none)`, (*stringValue)(&c.TURNTLSAddr)},
		{"turn-tls-cert", "TURNS certificate file (PEM) (default: tls-cert)", (*stringValue)(&c.TURNTLSCert)},
		{"turn-tls-key", "TURNS private key file (PEM) (default: tls-key)", (*stringValue)(&c.TURNTLSKey)},
		{"turn-udp-sockets", "UDP sockets sharing stun-addr with SO_REUSEPORT, each with its own read loop (0: one per core)", (*intValue)(&c.TURNUDPSockets)},
		{"turn-relay-ip", "address the relay sockets bind to (default: stun-addr's host, or all addresses)", (*stringValue)(&c.TURNRelayIP)},
		{"turn-public-ip", "relay address told to clients: the public address of a server behind 1:1 NAT (default: turn-relay-ip, or ice-host when it is an address)", (*stringValue)(&c.TURNPublicIP)},
		{"turn-ports", "relay port range", (*stringValue)(&c.TURNPorts)},
		{"turn-secret", "TURN REST shared secret, \"current[,previous]\" (default: random per process; prefer turn-secret-file)", (*stringValue)(&c.TURNSecret)},
		{"turn-secret-file", "file holding the TURN secret: the current one on the first line, optionally the previous one on the second; must not be readable by group or others", (*stringValue)(&c.TURNSecretFile)},
		{"turn-ttl", "lifetime of an admitted participant's TURN credential (refreshed over signalling before it expires)", (*durationValue)(&c.TURNTTL)},
		{"turn-check-ttl", "lifetime of the TURN credential of the patient's device check", (*durationValue)(&c.TURNCheckTTL)},
		{"turn-ttl-max", "the longest credential lifetime the relay accepts, whoever signed it", (*durationValue)(&c.TURNTTLMax)},
		{"turn-allow-peers", "comma-separated CIDR prefixes the relay may send to although they are reserved or internal (your own SFU)", (*stringValue)(&c.TURNAllowPeers)},
		{"turn-tcp-relay", "allow TCP allocations (RFC 6062), i.e. relaying to peers over TCP", (*boolValue)(&c.TURNTCPRelay)},
		{"turn-quota", "concurrent relay allocations per participant (486 past it)", (*intValue)(&c.TURNQuota)},
		{"turn-quota-total", "concurrent relay allocations in all (486 past it)", (*intValue)(&c.TURNQuotaTotal)},
		{"turn-bandwidth", "bandwidth limit per allocation and direction, in kbit/s (0: none)", (*intValue)(&c.TURNBandwidthKbps)},
		{"turn-urls", "external mode: the TURN service's URLs, comma-separated (turn:host:3478?transport=udp,turns:host:443?transport=tcp)", (*stringValue)(&c.TURNURLs)},
		{"sfu-udp-addr", `UDP listen address of the SFU (one port for every participant's connections to it), or "off" to keep every call peer to peer`, (*stringValue)(&c.SFUUDPAddr)},
		{"sfu-public-ip", "address the SFU announces to clients instead of the host's: the public address of a server behind 1:1 NAT", (*stringValue)(&c.SFUPublicIP)},
		{"gc-percent", "Go's garbage collection target (GOGC) for the server: collect when the heap has grown by this percentage of what survived the last collection; higher means rarer slow-downs of the SFU's forwarding and more memory. 0 leaves it to Go (100); GOGC in the environment, when set, wins", (*intValue)(&c.GCPercent)},
		{"metrics-addr", "Prometheus metrics listen address, e.g. 127.0.0.1:9090 (default: off); never the public web port", (*stringValue)(&c.MetricsAddr)},
		{"debug-pprof", "also serve Go's profiles (net/http/pprof, /debug/pprof/) on metrics-addr, which must then be a loopback address (benchmarks, debugging)", (*boolValue)(&c.DebugPprof)},
		{"link-ttl", "patient links expire this long after the visit's scheduled time", (*durationValue)(&c.LinkTTL)},
		{"session-idle", "sign-in sessions end after this long without activity", (*durationValue)(&c.SessionIdle)},
		{"session-lifetime", "sign-in sessions end this long after sign-in", (*durationValue)(&c.SessionLifetime)},
		{"shutdown-timeout", "on SIGTERM, how long to wait for calls and requests to close", (*durationValue)(&c.ShutdownTimeout)},
		{"log-level", "debug, info, warn or error", (*stringValue)(&c.LogLevel)},
		{"log-format", "json or text", (*stringValue)(&c.LogFormat)},
		{"require-mfa", "clinicians and admins must sign in with a second factor (TOTP or passkey)", (*boolValue)(&c.RequireMFA)},
		{"allowed-origins", "comma-separated extra origins (https://host[:port]) allowed to make state changes and open WebSockets, beside public-url's own", (*stringValue)(&c.AllowedOrigins)},
		{"trusted-proxies", "comma-separated addresses or CIDR prefixes of the reverse proxies in front of the web port: for a request from one, the client's address (rate limits, audit) is taken from X-Forwarded-For (default: none; the TCP peer is the client)", (*stringValue)(&c.TrustedProxies)},
		{"data-key-file", "file holding the key that encrypts patient names at rest (made on first start, mode 0600; default <data-dir>/data.key)", (*stringValue)(&c.DataKeyFile)},
		{"retention", "delete visits and their participants this long after the visit (e.g. 720h); 0 keeps them. The audit trail is kept", (*durationValue)(&c.Retention)},
		{"audit-key-file", "Ed25519 key signing audit checkpoints (made on first start, mode 0600; default <data-dir>/audit-signing.key)", (*stringValue)(&c.AuditKeyFile)},
		{"audit-checkpoint-file", "file signed audit checkpoints are appended to; ship it elsewhere (default <data-dir>/audit-checkpoints.txt)", (*stringValue)(&c.AuditCheckpointFile)},
		{"audit-checkpoint-every", "how often to write an audit checkpoint while the trail grows (and always at shutdown)", (*durationValue)(&c.AuditCheckpointEvery)},
		{"acme-domains", "comma-separated host names to get TLS certificates for from an ACME CA (instead of tls-cert and tls-key)", (*stringValue)(&c.ACMEDomains)},
		{"acme-email", "contact email given to the ACME CA", (*stringValue)(&c.ACMEEmail)},
		{"acme-directory", "ACME directory URL (default: Let's Encrypt)", (*stringValue)(&c.ACMEDir)},
		{"acme-cache-dir", "where ACME certificates and the account key are kept (default <data-dir>/acme)", (*stringValue)(&c.ACMECacheDir)},
		{"acme-http-addr", `listen address for ACME HTTP-01 challenges and the redirect to https, or "off"`, (*stringValue)(&c.ACMEHTTPAddr)},
		{"acme-ca-file", "PEM file of the CA certificates to check the ACME directory's HTTPS against, for a private ACME CA (default: the system's)", (*stringValue)(&c.ACMECAFile)},
	}
}

// Default returns the embedded defaults: everything on one machine, nothing else needed.
func Default() Config {
	return Config{
		HTTPAddr:          "127.0.0.1:8080",
		DataDir:           "./bedside-data",
		STUNAddr:          ":3478",
		TURN:              "embedded",
		TURNTCP:           true,
		TURNPorts:         "49152-65535",
		TURNTTL:           10 * time.Minute,
		TURNCheckTTL:      2 * time.Minute,
		TURNTTLMax:        time.Hour,
		TURNQuota:         12,
		TURNQuotaTotal:    1000,
		TURNBandwidthKbps: 10000,
		SFUUDPAddr:        ":3479",
		GCPercent:         200,
		LinkTTL:           24 * time.Hour,
		SessionIdle:       15 * time.Minute,
		SessionLifetime:   12 * time.Hour,
		ShutdownTimeout:   10 * time.Second,
		LogLevel:          "info",
		LogFormat:         "json",

		RequireMFA:           true,
		AuditCheckpointEvery: time.Minute,
		ACMEHTTPAddr:         ":80",
	}
}

// FlagSet is a flag set holding every config option (for a subcommand to add its own flags
// to) and the Config they fill.
type FlagSet struct {
	*flag.FlagSet
	cfg     *Config
	options []option
}

// NewFlagSet returns a FlagSet for the command name, filled with the defaults. Its usage
// text lists every option with its environment variable.
func NewFlagSet(name string, out io.Writer) *FlagSet {
	cfg := Default()
	fs := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), cfg: &cfg}
	fs.SetOutput(out)
	fs.options = cfg.options()
	for _, o := range fs.options {
		fs.Var(o.value, o.name, o.usage)
	}
	fs.Usage = func() { fs.PrintUsage(name, "") }
	return fs
}

// PrintUsage writes the command's usage: a synopsis, then every flag with its environment
// variable and default.
func (fs *FlagSet) PrintUsage(name, synopsis string) {
	w := fs.Output()
	if synopsis == "" {
		synopsis = "[options]"
	}
	fmt.Fprintf(w, "Usage: bedside %s %s\n\nOptions (each also settable as BEDSIDE_<NAME> in the environment and as \"<name>\" in the config file):\n", name, synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		env := ""
		if fs.isConfigOption(f.Name) {
			env = "  [" + EnvName(f.Name) + "]"
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
			def = fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s%s\n      %s%s\n", f.Name, env, f.Usage, def)
	})
}

func (fs *FlagSet) isConfigOption(name string) bool {
	for _, o := range fs.options {
		if o.name == name {
			return true
		}
	}
	return false
}

// EnvName is the environment variable for an option name: http-addr -> BEDSIDE_HTTP_ADDR.
func EnvName(option string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(option, "-", "_"))
}

// Parse parses args, then fills every option not given on the command line from the
// environment (env holds "KEY=value" strings) and then from the config file. It returns the
// validated Config. flag.ErrHelp is returned as is, for --help.
func (fs *FlagSet) Parse(args, env []string) (Config, error) {
	if err := fs.FlagSet.Parse(args); err != nil {
		return Config{}, err
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	known := map[string]option{}
	for _, o := range fs.options {
		known[o.name] = o
	}
	// Environment, over the file.
	fromEnv := map[string]bool{}
	envNames := make([]string, 0, len(env))
	envValues := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		envNames = append(envNames, k)
		envValues[k] = v
	}
	sort.Strings(envNames)
	for _, k := range envNames {
		name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, EnvPrefix)), "_", "-")
		o, ok := known[name]
		if !ok {
			return Config{}, fmt.Errorf("environment: unknown setting %s", k)
		}
		fromEnv[name] = true
		if explicit[name] {
			continue
		}
		if err := o.value.Set(envValues[k]); err != nil {
			return Config{}, fmt.Errorf("environment %s: invalid value %q: %w", k, envValues[k], err)
		}
	}
	// The file, under both.
	if path := fs.cfg.ConfigFile; path != "" {
		if err := fs.loadFile(path, known, func(name string) bool { return explicit[name] || fromEnv[name] }); err != nil {
			return Config{}, err
		}
	}
	cfg := *fs.cfg
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func (fs *FlagSet) loadFile(path string, known map[string]option, skip func(string) bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	// Unmarshal, not a Decoder: a second object or trailing text after the first must not
	// be ignored silently, and neither may a file holding null.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		if err == nil {
			err = errors.New("null")
		}
		return fmt.Errorf("config file %s: not a JSON object: %w", path, err)
	}
	names := make([]string, 0, len(raw))
	for k := range raw {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		o, ok := known[name]
		if !ok || name == "config" {
			return fmt.Errorf("config file %s: unknown key %q", path, name)
		}
		if skip(name) {
			continue
		}
		text, err := scalarText(raw[name])
		if err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, name, err)
		}
		if err := o.value.Set(text); err != nil {
			return fmt.Errorf("config file %s: key %q: invalid value %q: %w", path, name, text, err)
		}
	}
	return nil
}

// scalarText turns a JSON string, number or boolean into the text a flag would get.
func scalarText(raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	default:
		return "", errors.New("must be a string, number or boolean")
	}
}

// Validate checks every setting and fills the derived ones. Its errors name the setting.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("http-addr: invalid value %q: %w", c.HTTPAddr, err)
	}
	if c.DataDir == "" {
		return errors.New("data-dir: must not be empty")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls-cert and tls-key: set both or neither")
	}
	if c.ACMEDomains != "" {
		if c.TLSCert != "" {
			return errors.New("acme-domains: set either acme-domains or tls-cert and tls-key, not both")
		}
		for _, d := range c.ACMEList() {
			if d == "" || strings.ContainsAny(d, "/:* ") || !strings.Contains(d, ".") {
				return fmt.Errorf("acme-domains: invalid value %q: want host names such as visits.clinic.example", c.ACMEDomains)
			}
		}
		if c.ACMEHTTPAddr != "off" {
			if _, _, err := net.SplitHostPort(c.ACMEHTTPAddr); err != nil {
				return fmt.Errorf("acme-http-addr: invalid value %q: %w", c.ACMEHTTPAddr, err)
			}
		}
		if c.ACMEDir != "" {
			if u, err := url.Parse(c.ACMEDir); err != nil || u.Scheme != "https" || u.Host == "" {
				return fmt.Errorf("acme-directory: invalid value %q: want an https URL", c.ACMEDir)
			}
		}
		if c.ACMEEmail != "" && !strings.Contains(c.ACMEEmail, "@") {
			return fmt.Errorf("acme-email: invalid value %q", c.ACMEEmail)
		}
		if c.ACMECacheDir == "" {
			c.ACMECacheDir = filepath.Join(c.DataDir, "acme")
		}
	} else if c.ACMEEmail != "" || c.ACMEDir != "" || c.ACMECacheDir != "" || c.ACMECAFile != "" {
		return errors.New("acme-email, acme-directory, acme-cache-dir and acme-ca-file need acme-domains")
	}
	if c.PublicURL == "" {
		scheme := "http"
		if c.TLS() {
			scheme = "https"
		}
		host, port, _ := net.SplitHostPort(c.HTTPAddr)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		c.PublicURL = scheme + "://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("public-url: invalid value %q: want scheme://host[:port] with no path", c.PublicURL)
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if c.STUNAddr != "off" {
		if _, _, err := net.SplitHostPort(c.STUNAddr); err != nil {
			return fmt.Errorf("stun-addr: invalid value %q: %w", c.STUNAddr, err)
		}
	}
	if c.ICEHost == "" {
		c.ICEHost = u.Hostname()
	}
	if c.ACMEDomains != "" {
		if u.Scheme != "https" {
			return fmt.Errorf("public-url: invalid value %q: with acme-domains it must be https://<one of the domains>", c.PublicURL)
		}
		if !slices.Contains(c.ACMEList(), u.Hostname()) {
			return fmt.Errorf("public-url: invalid value %q: its host is not in acme-domains %q", c.PublicURL, c.ACMEDomains)
		}
	}
	for _, o := range c.Origins() {
		ou, err := url.Parse(o)
		if err != nil || (ou.Scheme != "http" && ou.Scheme != "https") || ou.Host == "" || ou.Path != "" || o != ou.Scheme+"://"+ou.Host {
			return fmt.Errorf("allowed-origins: invalid value %q: want comma-separated origins such as https://portal.clinic.example", o)
		}
	}
	if _, err := c.TrustedProxyList(); err != nil {
		return err
	}
	if c.DataKeyFile == "" {
		c.DataKeyFile = filepath.Join(c.DataDir, "data.key")
	}
	if c.AuditKeyFile == "" {
		c.AuditKeyFile = filepath.Join(c.DataDir, "audit-signing.key")
	}
	if c.AuditCheckpointFile == "" {
		c.AuditCheckpointFile = filepath.Join(c.DataDir, "audit-checkpoints.txt")
	}
	if err := c.validateTURN(); err != nil {
		return err
	}
	if c.SFUUDPAddr != "off" {
		if _, _, err := net.SplitHostPort(c.SFUUDPAddr); err != nil {
			return fmt.Errorf("sfu-udp-addr: invalid value %q: %w", c.SFUUDPAddr, err)
		}
	}
	if c.SFUPublicIP != "" && net.ParseIP(c.SFUPublicIP) == nil {
		return fmt.Errorf("sfu-public-ip: invalid value %q: not an IP address", c.SFUPublicIP)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("metrics-addr: invalid value %q: %w", c.MetricsAddr, err)
		}
	}
	if c.GCPercent != 0 && (c.GCPercent < 50 || c.GCPercent > 1000) {
		return fmt.Errorf("gc-percent: invalid value %d: 50 to 1000, or 0 for Go's default", c.GCPercent)
	}
	if c.DebugPprof && !loopbackHostPort(c.MetricsAddr) {
		return errors.New("debug-pprof: needs metrics-addr on a loopback address (e.g. 127.0.0.1:9090): profiles are not for the network")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"link-ttl", c.LinkTTL, time.Minute},
		{"session-idle", c.SessionIdle, time.Minute},
		{"session-lifetime", c.SessionLifetime, time.Minute},
		{"shutdown-timeout", c.ShutdownTimeout, 0},
		{"retention", c.Retention, 0},
		{"audit-checkpoint-every", c.AuditCheckpointEvery, time.Second},
	} {
		if d.v < d.min {
			return fmt.Errorf("%s: invalid value %s: must be at least %s", d.name, d.v, d.min)
		}
	}
	if c.Retention > 0 && c.Retention < 24*time.Hour {
		return fmt.Errorf("retention: invalid value %s: at least 24h (or 0 to keep visits)", c.Retention)
	}
	if c.SessionIdle > c.SessionLifetime {
		return fmt.Errorf("session-idle: invalid value %s: longer than session-lifetime %s", c.SessionIdle, c.SessionLifetime)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log-level: invalid value %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return fmt.Errorf("log-format: invalid value %q: want json or text", c.LogFormat)
	}
	return nil
}

// TLS reports whether the web server serves HTTPS (from files or ACME).
func (c *Config) TLS() bool { return c.TLSCert != "" && c.TLSKey != "" || c.ACMEDomains != "" }

// ACMEList is acme-domains as a list.
func (c *Config) ACMEList() []string { return splitList(c.ACMEDomains) }

// TrustedProxyList parses trusted-proxies.
func (c *Config) TrustedProxyList() ([]netip.Prefix, error) {
	return prefixList("trusted-proxies", c.TrustedProxies)
}

// Origins is allowed-origins as a list.
func (c *Config) Origins() []string { return splitList(c.AllowedOrigins) }

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

type boolValue bool

func (b *boolValue) Set(v string) error {
	x, err := strconv.ParseBool(v)
	if err != nil {
		return errors.New("want true or false")
	}
	*b = boolValue(x)
	return nil
}

func (b *boolValue) String() string {
	if b == nil {
		return "false"
	}
	return strconv.FormatBool(bool(*b))
}

// IsBoolFlag lets --require-mfa stand for --require-mfa=true (and --turn-tcp for true).
func (b *boolValue) IsBoolFlag() bool { return true }

type stringValue string

type intValue int

func (i *intValue) Set(v string) error {
	x, err := strconv.Atoi(v)
	if err != nil || x < 0 {
		return errors.New("want a whole number, 0 or more")
	}
	*i = intValue(x)
	return nil
}
func (i *intValue) String() string {
	if i == nil {
		return "0"
	}
	return strconv.Itoa(int(*i))
}

func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }
func (s *stringValue) String() string {
	if s == nil {
		return ""
	}
	return string(*s)
}

type durationValue time.Duration

func (d *durationValue) Set(v string) error {
	x, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("not a duration such as 90s, 15m or 24h")
	}
	*d = durationValue(x)
	return nil
}

func (d *durationValue) String() string {
	if d == nil {
		return ""
	}
	return time.Duration(*d).String()
}

// loopbackHostPort reports whether addr is host:port with a loopback IP or localhost.
func loopbackHostPort(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
