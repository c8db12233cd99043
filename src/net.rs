//! Which addresses the server may connect to on a user's behalf: the rule shared by the
//! sandboxes' egress proxy and webhook deliveries, so neither can be pointed at the host's
//! loopback, link-local or private networks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether an address may be a public host: not loopback, private, link-local, shared (CGNAT),
/// multicast, reserved or unspecified. (Documentation ranges are allowed: some networks serve
/// their package mirrors there.)
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo embed IPv4 addresses.
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)
        || first == 0x2002
        || (first == 0x2001 && ip.segments()[1] == 0)
        // Site-local (deprecated, fec0::/10) and IPv4-compatible (::/96).
        || (first & 0xffc0) == 0xfec0
        || ip.segments()[..6].iter().all(|s| *s == 0))
}

/// Whether an address is globally routable: public (see [`is_public_address`]) and not a
/// documentation or benchmarking range either. Webhooks, whose targets anyone may name, need
/// this stricter rule.
pub fn is_global_address(ip: IpAddr) -> bool {
    let v4_reserved = |v4: Ipv4Addr| {
        let [a, b, c, _] = v4.octets();
        (a == 192 && b == 0 && c == 2)
            || (a == 198 && b == 51 && c == 100)
            || (a == 203 && b == 0 && c == 113)
            || (a == 198 && (18..20).contains(&b))
    };
    let reserved = match ip {
        IpAddr::V4(v4) => v4_reserved(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_reserved(v4),
            None => v6.segments()[..2] == [0x2001, 0x0db8],
        },
    };
    is_public_address(ip) && !reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_allowed() {
        let refused = [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.8",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::2",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "::127.0.0.1",
            "fec0::1",
            "ff02::1",
        ];
        for ip in refused {
            assert!(
                !is_public_address(ip.parse().unwrap()),
                "{ip} must be refused"
            );
        }
        let allowed = [
            "104.16.1.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "203.0.113.80",
            "2606:4700::6810:1",
        ];
        for ip in allowed {
            assert!(
                is_public_address(ip.parse().unwrap()),
                "{ip} must be allowed"
            );
        }
    }

    #[test]
    fn global_addresses_exclude_documentation_and_benchmarking_ranges() {
        for ip in [
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.80",
            "198.18.0.1",
            "198.19.255.255",
            "2001:db8::1",
            "::ffff:203.0.113.80",
            "127.0.0.1",
            "169.254.169.254",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(
                !is_global_address(ip.parse().unwrap()),
                "{ip} must be refused"
            );
        }
        for ip in ["8.8.8.8", "104.16.1.34", "198.20.0.1", "2606:4700::6810:1"] {
            assert!(
                is_global_address(ip.parse().unwrap()),
                "{ip} must be allowed"
            );
        }
    }
}
