package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// validateTURN checks the TURN options. Its errors name the option.
func (c *Config) validateTURN() error {
	switch c.TURN {
	case "embedded", "external", "off":
	default:
		return fmt.Errorf("turn: invalid value %q: want embedded, external or off", c.TURN)
	}
	for _, a := range []struct{ name, v string }{{"turn-tls-addr", c.TURNTLSAddr}} {
		if a.v != "" {
			if _, _, err := net.SplitHostPort(a.v); err != nil {
				return fmt.Errorf("%s: invalid value %q: %w", a.name, a.v, err)
			}
		}
	}
	if c.TURNTLSAddr != "" && c.TURN == "embedded" {
		cert, key := c.TURNTLSFiles()
		if cert == "" || key == "" {
			return errors.New("turn-tls-addr: TURNS needs a certificate: set turn-tls-cert and turn-tls-key (or tls-cert and tls-key)")
		}
	}
	if (c.TURNTLSCert == "") != (c.TURNTLSKey == "") {
		return errors.New("turn-tls-cert and turn-tls-key: set both or neither")
	}
	for _, a := range []struct{ name, v string }{{"turn-relay-ip", c.TURNRelayIP}, {"turn-public-ip", c.TURNPublicIP}} {
		if a.v != "" && net.ParseIP(a.v) == nil {
			return fmt.Errorf("%s: invalid value %q: not an IP address", a.name, a.v)
		}
	}
	if _, _, err := c.TURNPortRange(); err != nil {
		return err
	}
	if _, err := c.TURNAllowList(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"turn-ttl", c.TURNTTL}, {"turn-check-ttl", c.TURNCheckTTL}, {"turn-ttl-max", c.TURNTTLMax}} {
		if d.v < time.Minute {
			return fmt.Errorf("%s: invalid value %s: must be at least 1m", d.name, d.v)
		}
	}
	if c.TURNTTL > c.TURNTTLMax || c.TURNCheckTTL > c.TURNTTLMax {
		return fmt.Errorf("turn-ttl-max: invalid value %s: shorter than turn-ttl %s or turn-check-ttl %s", c.TURNTTLMax, c.TURNTTL, c.TURNCheckTTL)
	}
	if c.TURNQuota < 1 {
		return fmt.Errorf("turn-quota: invalid value %d: must be at least 1", c.TURNQuota)
	}
	if c.TURNQuotaTotal < 1 {
		return fmt.Errorf("turn-quota-total: invalid value %d: must be at least 1", c.TURNQuotaTotal)
	}
	if c.TURNSecret != "" && c.TURNSecretFile != "" {
		return errors.New("turn-secret and turn-secret-file: set one, not both")
	}
	if _, err := c.TURNSecrets(); err != nil {
		return err
	}
	if c.TURN == "external" {
		if c.TURNSecret == "" && c.TURNSecretFile == "" {
			return errors.New("turn: external needs the service's shared secret: set turn-secret-file (or turn-secret)")
		}
		urls := c.TURNURLList()
		if len(urls) == 0 {
			return errors.New("turn-urls: external needs the TURN service's URLs")
		}
		for _, u := range urls {
			if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				return fmt.Errorf("turn-urls: invalid value %q: each URL starts with turn: or turns:", u)
			}
		}
	}
	return nil
}

// TURNTLSFiles are the certificate and key of TURNS: its own, else the web server's.
func (c *Config) TURNTLSFiles() (cert, key string) {
	if c.TURNTLSCert != "" {
		return c.TURNTLSCert, c.TURNTLSKey
	}
	return c.TLSCert, c.TLSKey
}

// TURNPortRange parses turn-ports.
func (c *Config) TURNPortRange() (lo, hi uint16, err error) {
	a, b, ok := strings.Cut(c.TURNPorts, "-")
	x, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	y, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if !ok || err1 != nil || err2 != nil || x < 1024 || y < x {
		return 0, 0, fmt.Errorf("turn-ports: invalid value %q: want min-max, 1024 <= min <= max <= 65535", c.TURNPorts)
	}
	return uint16(x), uint16(y), nil
}

// TURNAllowList parses turn-allow-peers.
func (c *Config) TURNAllowList() ([]netip.Prefix, error) {
	return prefixList("turn-allow-peers", c.TURNAllowPeers)
}

// prefixList parses a comma-separated list of addresses and CIDR prefixes (an address is
// a prefix of its full length); name is the option's, for the error.
func prefixList(name, list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%s: invalid value %q: not an address or CIDR prefix", name, f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%s: invalid value %q: not an address or CIDR prefix", name, f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// TURNURLList splits turn-urls.
func (c *Config) TURNURLList() []string {
	var out []string
	for f := range strings.SplitSeq(c.TURNURLs, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// TURNSecrets returns the configured secrets, current first (nil: none configured). A
// secret file readable by group or others is refused: anyone who reads it can mint relay
// credentials.
func (c *Config) TURNSecrets() ([][]byte, error) {
	var lines []string
	switch {
	case c.TURNSecretFile != "":
		fi, err := os.Stat(c.TURNSecretFile)
		if err != nil {
			return nil, fmt.Errorf("turn-secret-file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("turn-secret-file: %s has mode %04o: group or others may read it; chmod 600 it", c.TURNSecretFile, fi.Mode().Perm())
		}
		data, err := os.ReadFile(c.TURNSecretFile)
		if err != nil {
			return nil, fmt.Errorf("turn-secret-file: %w", err)
		}
		for l := range strings.SplitSeq(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		if len(lines) == 0 {
			return nil, fmt.Errorf("turn-secret-file: %s is empty", c.TURNSecretFile)
		}
	case c.TURNSecret != "":
		for l := range strings.SplitSeq(c.TURNSecret, ",") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
	default:
		return nil, nil
	}
	if len(lines) > 2 {
		return nil, errors.New("turn-secret: at most two secrets (current and previous)")
	}
	var out [][]byte
	for _, l := range lines {
		if len(l) < 16 {
			return nil, errors.New("turn-secret: a secret must be at least 16 characters")
		}
		out = append(out, []byte(l))
	}
	return out, nil
}
