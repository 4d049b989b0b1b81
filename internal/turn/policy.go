package turn

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// deniedRange is a block of addresses the relay never sends to, with the name logs use.
type deniedRange struct {
	prefix netip.Prefix
	name   string
}

// deniedRanges are the reserved and internal networks (issue: the SSRF-through-TURN class,
// coturn CVE-2020-26262 and CVE-2026-27624). IPv4-mapped IPv6 addresses (::ffff:a.b.c.d)
// are unmapped before the check, so they meet the IPv4 rows. The IPv6 rows also cover the
// forms that embed an IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible), which would
// otherwise reach the IPv4 ranges through a translator.
var deniedRanges = func() []deniedRange {
	rows := []struct{ cidr, name string }{
		{"0.0.0.0/8", "this-network"},
		{"10.0.0.0/8", "private"},
		{"100.64.0.0/10", "shared-cgnat"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local"},
		{"172.16.0.0/12", "private"},
		{"192.0.0.0/24", "ietf-protocol"},
		{"192.168.0.0/16", "private"},
		{"198.18.0.0/15", "benchmarking"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved"},
		{"255.255.255.255/32", "broadcast"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/96", "ipv4-compatible"},
		{"fc00::/7", "unique-local"},
		{"fe80::/10", "link-local"},
		{"ff00::/8", "multicast"},
		{"64:ff9b::/96", "nat64"},
		{"64:ff9b:1::/48", "nat64-local"},
		{"2002::/16", "6to4"},
		{"2001::/32", "teredo"},
		{"100::/64", "discard"},
	}
	out := make([]deniedRange, len(rows))
	for i, r := range rows {
		out[i] = deniedRange{netip.MustParsePrefix(r.cidr), r.name}
	}
	return out
}()

// PeerPolicy decides which peer addresses the relay may send to: nothing in deniedRanges,
// unless the operator's allow list names it (a test network), or it is one of the exact
// addresses allowed (the embedded SFU's own: its IP and port only).
type PeerPolicy struct {
	allow []netip.Prefix
	// exact are addresses allowed with their port; ports maps each of their IPs to its
	// allowed ports, for the check of every packet the relay sends (ChannelData and Send
	// carry a port the permission did not).
	exact []netip.AddrPort
	ports map[netip.Addr][]uint16
}

// NewPeerPolicy returns the policy with an allow list (may be empty).
func NewPeerPolicy(allow []netip.Prefix) *PeerPolicy {
	p := &PeerPolicy{}
	for _, a := range allow {
		p.allow = append(p.allow, netip.PrefixFrom(a.Addr().Unmap(), unmappedBits(a)).Masked())
	}
	return p
}

// WithExact allows exact addresses (IP and port) despite the denied ranges.
func (p *PeerPolicy) WithExact(addrs []netip.AddrPort) *PeerPolicy {
	for _, a := range addrs {
		a = netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port())
		p.exact = append(p.exact, a)
		if p.ports == nil {
			p.ports = map[netip.Addr][]uint16{}
		}
		p.ports[a.Addr()] = append(p.ports[a.Addr()], a.Port())
	}
	return p
}

func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}

// ParseAllowList parses a comma-separated list of CIDR prefixes or single addresses.
func ParseAllowList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or CIDR prefix", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR prefix", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Check says whether the relay may send to ip, and if not, the name of the range that
// forbids it (for logs: the name, never the address).
func (p *PeerPolicy) Check(ip net.IP) (ok bool, deniedBy string) {
	a, valid := netip.AddrFromSlice(ip)
	if !valid {
		return false, "malformed"
	}
	a = a.Unmap().WithZone("")
	for _, pre := range p.allow {
		if pre.Contains(a) {
			return true, ""
		}
	}
	if _, ok := p.ports[a]; ok {
		return true, "" // permissions are per IP; the port is checked per packet (PortAllowed)
	}
	for _, r := range deniedRanges {
		if r.prefix.Contains(a) {
			return false, r.name
		}
	}
	return true, ""
}

// PortAllowed checks a packet's destination when its IP is allowed only as an exact
// address: the port must be one allowed with it. Other destinations passed Check already.
// It costs nothing when there are no exact addresses.
func (p *PeerPolicy) PortAllowed(addr net.Addr) bool {
	if len(p.ports) == 0 {
		return true
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return true
	}
	a, ok := netip.AddrFromSlice(ua.IP)
	if !ok {
		return false
	}
	ports, exact := p.ports[a.Unmap()]
	if !exact {
		return true
	}
	for _, pre := range p.allow {
		if pre.Contains(a.Unmap()) {
			return true // allowed as a network: any port
		}
	}
	for _, port := range ports {
		if int(port) == ua.Port {
			return true
		}
	}
	return false
}

// Allowed is Check without the reason; it is pion's PermissionHandler.
func (p *PeerPolicy) Allowed(_ net.Addr, ip net.IP) bool {
	ok, _ := p.Check(ip)
	return ok
}
