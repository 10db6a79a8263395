//! The SSRF guard: which addresses a webhook may reach.
//!
//! Refused unless the operator allows them: loopback, unspecified, private (RFC 1918), shared
//! (CGNAT, RFC 6598), link-local (where the cloud metadata services live), unique-local IPv6,
//! multicast and broadcast, and every IPv6 form that embeds one of those IPv4 addresses (mapped,
//! NAT64). The check runs twice: when a job is created (on an address literal, and on what its
//! name resolves to then), and at connect time on the very addresses the client will dial
//! (`GuardedResolver` is the HTTP client's resolver), so a name that later resolves to a refused
//! address is still refused.
//!
//! Must not send anything: it only judges addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;

/// Which addresses webhooks may reach: every public address, plus the ranges the operator allows.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// The default refusals, with `allowed` ranges let through (for example `10.0.0.0/8` for
    /// receivers on the operator's own network, or `127.0.0.0/8` in development).
    pub fn new(allowed: Vec<IpNet>) -> AddressPolicy {
        AddressPolicy { allowed }
    }

    /// Whether a webhook may connect to `ip`. An operator's allowed range wins over the
    /// refusals.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        !is_refused(ip)
    }
}

fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_refused_v4(v4);
            }
            let segments = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fe80::/10, link-local
                || (segments[0] & 0xffc0) == 0xfe80
                // fc00::/7, unique local (AWS's metadata service has fd00:ec2::254)
                || (segments[0] & 0xfe00) == 0xfc00
                // fec0::/10, the deprecated site-local range
                || (segments[0] & 0xffc0) == 0xfec0
        }
    }
}

fn is_refused_v4(ip: Ipv4Addr) -> bool {
    let octets = ip.octets();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8, "this network"
        || octets[0] == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT; Alibaba's metadata service)
        || (octets[0] == 100 && (octets[1] & 0xc0) == 64)
        // 192.0.0.0/24, IETF protocol assignments
        || (octets[0] == 192 && octets[1] == 0 && octets[2] == 0)
        // 198.18.0.0/15, benchmarking
        || (octets[0] == 198 && (octets[1] & 0xfe) == 18)
        // 240.0.0.0/4, reserved
        || octets[0] >= 240
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or
/// NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = ip.segments();
    let low = || {
        Ipv4Addr::new(
            (segments[6] >> 8) as u8,
            segments[6] as u8,
            (segments[7] >> 8) as u8,
            segments[7] as u8,
        )
    };
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(low());
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low());
    }
    None
}

/// Resolves host names to addresses. The system's resolver in production; tests substitute
/// their own to make a name resolve to a refused address.
#[async_trait]
pub trait NameResolver: Send + Sync + 'static {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
pub struct SystemResolver;

#[async_trait]
impl NameResolver for SystemResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        let addresses = tokio::net::lookup_host((host, 0)).await?;
        Ok(addresses.map(|address| address.ip()).collect())
    }
}

/// A name refused because everything it resolves to is refused.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses webhooks may not reach ({addresses})")]
pub struct Refused {
    pub host: String,
    pub addresses: String,
}

/// The HTTP client's resolver: resolves with `NameResolver` and hands the client only the
/// addresses the policy permits, so the client never dials a refused one.
#[derive(Clone)]
pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
    pub resolver: Arc<dyn NameResolver>,
}

impl GuardedResolver {
    /// The permitted addresses of `host`; `Refused` if it has addresses but none is permitted.
    pub async fn permitted(
        &self,
        host: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let resolved = self.resolver.resolve(host).await?;
        let permitted: Vec<IpAddr> = resolved
            .iter()
            .copied()
            .filter(|ip| self.policy.permits(*ip))
            .collect();
        if permitted.is_empty() {
            let addresses = resolved
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Box::new(Refused {
                host: host.to_owned(),
                addresses,
            }));
        }
        Ok(permitted)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let permitted = guard.permitted(name.as_str()).await?;
            // The port is the URL's; reqwest replaces this 0.
            let addresses: reqwest::dns::Addrs =
                Box::new(permitted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn private_and_special_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
            "ff02::1",
        ] {
            assert!(!policy.permits(ip(refused)), "{refused} should be refused");
        }
        for permitted in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                policy.permits(ip(permitted)),
                "{permitted} should be permitted"
            );
        }
    }

    #[test]
    fn an_allowed_range_lets_its_addresses_through_and_no_others() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().expect("a range")]);
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("::1")));
    }

    struct Fixed(Vec<IpAddr>);

    #[async_trait]
    impl NameResolver for Fixed {
        async fn resolve(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses_and_refuses_a_name_with_none_left() {
        let guard = |addresses: Vec<IpAddr>| GuardedResolver {
            policy: Arc::new(AddressPolicy::default()),
            resolver: Arc::new(Fixed(addresses)),
        };
        let mixed = guard(vec![ip("127.0.0.1"), ip("93.184.216.34")]);
        assert_eq!(
            mixed.permitted("mixed.test").await.expect("one is public"),
            vec![ip("93.184.216.34")]
        );
        let local = guard(vec![ip("127.0.0.1")]);
        let error = local.permitted("local.test").await.expect_err("refused");
        assert!(error.to_string().contains("127.0.0.1"), "{error}");
    }
}
