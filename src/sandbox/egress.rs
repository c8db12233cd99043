//! The egress proxy: the only way out of a jailed local sandbox. An HTTP `CONNECT` proxy on the
//! host's loopback, forwarded into every sandbox's network namespace (see `local::jail`), that
//! tunnels to the hosts of an allow list (`SANDBOX_EGRESS_ALLOW`, by default the npm registry)
//! and to nothing else. Names are resolved here, on the host, and a connection is only made to
//! public addresses, so neither the list nor DNS can lead a sandbox to the host's loopback,
//! link-local or private ranges.

use std::net::{Ipv4Addr, SocketAddr};

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::net::is_public_address;

/// How long resolving and connecting to an allowed host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One entry of the allow list: `host` (port 443) or `host:port`; `*.example.com` allows the
/// subdomains of `example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    host: String,
    port: u16,
}

impl EgressRule {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim().to_ascii_lowercase();
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => (
                host.to_owned(),
                port.parse()
                    .map_err(|_| format!("egress rule {entry:?}: bad port"))?,
            ),
            None => (entry.clone(), 443),
        };
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!("egress rule {entry:?}: not a host name"));
        }
        Ok(Self { host, port })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == self.host,
        }
    }
}

/// Parses a comma-separated allow list.
pub fn parse_rules(list: &str) -> Result<Vec<EgressRule>, String> {
    list.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(EgressRule::parse)
        .collect()
}

/// A running egress proxy on `127.0.0.1:{port}`; it stops when dropped.
pub struct EgressProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EgressProxy {
    pub async fn start(rules: Vec<EgressRule>) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let rules: Arc<[EgressRule]> = rules.into();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let rules = rules.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let rules = rules.clone();
                        async move { Ok::<_, std::convert::Infallible>(tunnel(&rules, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Self { port, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn refuse(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
}

/// Answers a `CONNECT host:port` for an allowed host with a tunnel to one of its public
/// addresses; everything else is refused.
async fn tunnel(rules: &[EgressRule], request: Request<Incoming>) -> Response<Empty<Bytes>> {
    if request.method() != Method::CONNECT {
        return refuse(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(authority) = request.uri().authority() else {
        return refuse(StatusCode::BAD_REQUEST);
    };
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    if !rules.iter().any(|rule| rule.allows(&host, port)) {
        tracing::info!(%host, port, "sandbox egress refused: not on the allow list");
        return refuse(StatusCode::FORBIDDEN);
    }
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect_public(&host, port)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(%host, port, %err, "sandbox egress refused");
            return refuse(StatusCode::BAD_GATEWAY);
        }
        Err(_) => return refuse(StatusCode::GATEWAY_TIMEOUT),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let mut upgraded = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut upstream).await;
            }
            Err(err) => tracing::debug!(%err, "sandbox egress tunnel not upgraded"),
        }
    });
    Response::new(Empty::new())
}

async fn connect_public(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let public: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|addr| is_public_address(addr.ip()))
        .collect();
    if public.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the host has no public address",
        ));
    }
    let mut last = None;
    for addr in public {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_hosts_and_ports() {
        let rules = parse_rules("registry.npmjs.org, *.example.com:8443").unwrap();
        let allowed = |host: &str, port| rules.iter().any(|rule| rule.allows(host, port));
        assert!(allowed("registry.npmjs.org", 443));
        assert!(!allowed("registry.npmjs.org", 80));
        assert!(!allowed("evil-registry.npmjs.org", 443));
        assert!(!allowed("registry.npmjs.org.evil.com", 443));
        assert!(allowed("a.example.com", 8443));
        assert!(allowed("a.b.example.com", 8443));
        assert!(!allowed("example.com", 8443));
        assert!(!allowed("badexample.com", 8443));
        assert!(parse_rules("").unwrap().is_empty());
        assert!(parse_rules("http://x").is_err());
        assert!(parse_rules("a..b").is_err());
    }

    async fn connect_via(proxy: u16, target: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
        stream
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.unwrap();
        String::from_utf8_lossy(&head[..n]).into_owned()
    }

    #[tokio::test]
    async fn the_proxy_refuses_hosts_off_the_list_and_non_public_addresses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // `localhost` is on the list, yet resolves to loopback only: still refused.
        let proxy = EgressProxy::start(parse_rules(&format!("localhost:{port}")).unwrap())
            .await
            .unwrap();
        let off_list = connect_via(proxy.port(), "127.0.0.1:22").await;
        assert!(off_list.starts_with("HTTP/1.1 403"), "{off_list}");
        let loopback = connect_via(proxy.port(), &format!("localhost:{port}")).await;
        assert!(loopback.starts_with("HTTP/1.1 502"), "{loopback}");
    }
}
