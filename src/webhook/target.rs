//! Where a webhook may send: an http(s) URL whose host has only global addresses (see
//! `net::is_global_address`), unless WEBHOOK_ALLOW_PRIVATE. Checked when the webhook is saved,
//! and again on every connection by the client's resolver, so a name that later resolves to a
//! private address (DNS rebinding) is refused too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::net::is_global_address;

pub const MAX_URL_CHARS: usize = 2048;
/// How long resolving a webhook's host may take when it is saved.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the URL may have at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("not a URL: {0}")]
    Invalid(#[from] url::ParseError),
    #[error("the URL must be http:// or https://")]
    Scheme,
    #[error("the URL must name a host")]
    NoHost,
    #[error("the host {0} does not resolve")]
    Unresolvable(String),
    #[error("the URL leads to {0}, which is not a public address")]
    NotGlobal(IpAddr),
}

/// Whether deliveries may reach non-global addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_private: bool,
}

impl TargetPolicy {
    fn allows(self, ip: IpAddr) -> bool {
        self.allow_private || is_global_address(ip)
    }

    /// Parses a URL and checks what can be checked without DNS: the scheme, the host, and the
    /// address when the host is one.
    pub fn parse_url(self, url: &str) -> Result<Url, TargetError> {
        if url.chars().count() > MAX_URL_CHARS {
            return Err(TargetError::TooLong);
        }
        let url = Url::parse(url.trim())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme);
        }
        let ip = match url.host() {
            None => return Err(TargetError::NoHost),
            Some(url::Host::Domain(_)) => None,
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        };
        match ip {
            Some(ip) if !self.allows(ip) => Err(TargetError::NotGlobal(ip)),
            _ => Ok(url),
        }
    }

    /// [`Self::parse_url`], then every address the host resolves to must be allowed.
    pub async fn check_url(self, url: &str) -> Result<Url, TargetError> {
        let url = self.parse_url(url)?;
        if let Some(url::Host::Domain(host)) = url.host() {
            let unresolvable = || TargetError::Unresolvable(host.to_owned());
            let addrs = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0)))
                .await
                .map_err(|_| unresolvable())?
                .map_err(|_| unresolvable())?;
            let mut any = false;
            for addr in addrs {
                if !self.allows(addr.ip()) {
                    return Err(TargetError::NotGlobal(addr.ip()));
                }
                any = true;
            }
            if !any {
                return Err(unresolvable());
            }
        }
        Ok(url)
    }

    /// The HTTP client of deliveries: its resolver drops addresses the policy refuses, and it
    /// uses no proxy and follows no redirect (either could lead elsewhere).
    pub fn client(self, timeout: Duration) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(self)))
            .user_agent(concat!("CodeKraft-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// Resolves with the system resolver, keeping only the addresses the policy allows.
struct PolicyResolver(TargetPolicy);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| policy.allows(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} has no address a webhook may reach").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_private: false,
    };
    const PERMISSIVE: TargetPolicy = TargetPolicy {
        allow_private: true,
    };

    #[tokio::test]
    async fn only_http_urls_of_global_hosts_are_accepted() {
        for (url, expected) in [
            ("ftp://example.com/", "http"),
            ("http://", "not a URL"),
            ("/relative", "not a URL"),
            ("http://127.0.0.1:9/hook", "not a public address"),
            ("http://[::1]/hook", "not a public address"),
            ("http://[::ffff:169.254.169.254]/", "not a public address"),
            ("http://10.0.0.1/", "not a public address"),
            ("http://0x7f000001/", "not a public address"),
            ("https://192.0.2.10/", "not a public address"),
            ("http://localhost:9/hook", "not a public address"),
        ] {
            let err = STRICT.check_url(url).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(matches!(STRICT.parse_url(&long), Err(TargetError::TooLong)));
        assert!(STRICT.check_url("https://8.8.8.8/hook").await.is_ok());
    }

    #[tokio::test]
    async fn allow_private_lets_loopback_through() {
        assert!(PERMISSIVE
            .check_url("http://127.0.0.1:9/hook")
            .await
            .is_ok());
        assert!(PERMISSIVE
            .check_url("http://localhost:9/hook")
            .await
            .is_ok());
        assert!(PERMISSIVE.check_url("ftp://127.0.0.1/").await.is_err());
    }

    /// The connect-time check: a name that resolves to loopback only gets no address, so the
    /// request fails before any connection (the listener here would see one).
    #[tokio::test]
    async fn the_client_refuses_names_that_resolve_to_private_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = STRICT.client(Duration::from_secs(5)).unwrap();
        let err = client
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect() || err.is_request(), "{err:?}");
        let accepted = tokio::time::timeout(Duration::from_millis(1), listener.accept()).await;
        assert!(accepted.is_err(), "nothing may connect");
    }
}
