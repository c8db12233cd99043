//! The check after the type check: the preview itself. A page that type-checks can still fail
//! to render (a hook in a Server Component, an import that does not resolve); `next dev` then
//! answers 500 and puts the error in the page's `__NEXT_DATA__`. That error, as a diagnostic,
//! goes back to the model like a failed build check.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::diagnostic::{parse_next_error, Diagnostic};

/// What a model gets to read of a failing page at most.
const MAX_ERROR_CHARS: usize = 4000;
/// Bytes of an error page read to find that error (`next dev` puts it near the end of a page
/// of a few KiB); the rest is never read, whatever the app sends.
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct PreviewCheck {
    http: reqwest::Client,
    /// Long enough for the first compile after the model's changes.
    timeout: Duration,
}

impl PreviewCheck {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            // The app decides where a redirect points: the check looks at its preview only.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(LocalhostIsLoopback))
            .build()
            .expect("a reqwest client without proxies always builds");
        Self { http, timeout }
    }

    /// `Some(error)` when the preview answers with a server error. A preview that cannot be
    /// reached says nothing about the app (the server may not reach its own public URL): that
    /// passes, with a warning in the log.
    pub async fn errors(&self, url: &str) -> Option<Diagnostic> {
        let response = match self.http.get(url).timeout(self.timeout).send().await {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(url, %err, "could not check the preview");
                return None;
            }
        };
        let status = response.status();
        if !status.is_server_error() {
            return None;
        }
        let body = read_capped(response, MAX_BODY_BYTES).await;
        Some(describe_failure(status.as_u16(), &body))
    }
}

/// The body's first `limit` bytes (as text); a body cut short by an error is kept as read.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(%err, "the preview's error page ended early");
                break;
            }
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Resolves `localhost` and `*.localhost` to loopback without asking anyone, as browsers do
/// (RFC 6761): local previews are at `http://{id}.localhost:PORT`, names glibc does not know.
/// Other names go to the system resolver.
struct LocalhostIsLoopback;

impl reqwest::dns::Resolve for LocalhostIsLoopback {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = if host == "localhost" || host.ends_with(".localhost") {
                vec![
                    (Ipv4Addr::LOCALHOST, 0).into(),
                    (Ipv6Addr::LOCALHOST, 0).into(),
                ]
            } else {
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect()
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The error `next dev` embedded in its error page, else the start of the body.
fn describe_failure(status: u16, body: &str) -> Diagnostic {
    if let Some(error) = next_data_error(body) {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        return parse_next_error(&error);
    }
    let body: String = body.trim().chars().take(MAX_ERROR_CHARS).collect();
    Diagnostic::unlocated(&format!(
        "The preview page answers HTTP {status}:\n{}",
        body.trim()
    ))
}

fn next_data_error(body: &str) -> Option<String> {
    const OPEN: &str = r#"<script id="__NEXT_DATA__" type="application/json">"#;
    let start = body.find(OPEN)? + OPEN.len();
    let end = start + body[start..].find("</script>")?;
    let data: serde_json::Value = serde_json::from_str(&body[start..end]).ok()?;
    data.pointer("/err/message")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_of_a_next_error_page_is_read_from_next_data() {
        let page = r#"<html><body><script id="__NEXT_DATA__" type="application/json">{"props":{},"err":{"name":"Error","message":"./app/page.tsx:1:10\nError: You're importing a module that depends on `useState` into a React Server Component module."}}</script></body></html>"#;
        let described = describe_failure(500, page);
        assert_eq!(described.file.as_deref(), Some("app/page.tsx"));
        assert_eq!((described.line, described.column), (Some(1), Some(10)));
        assert!(described.message.starts_with("You're importing"));
        assert!(described.message.contains("`useState`"));
    }

    /// Accepts one connection, reads its request head and writes `head` then `body_bytes`
    /// bytes of body; hands back the request head and how many body bytes went out before the
    /// client hung up.
    async fn serve_once(
        listener: tokio::net::TcpListener,
        head: String,
        body_bytes: usize,
    ) -> (String, usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = [0u8; 1024];
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the request ended early");
            request.extend_from_slice(&buffer[..read]);
        }
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = [b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < body_bytes {
            match stream
                .write(&chunk[..chunk.len().min(body_bytes - sent)])
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(written) => sent += written,
            }
        }
        (String::from_utf8(request).unwrap(), sent)
    }

    /// Answers one request with a small 500 page.
    async fn failing_server() -> (u16, tokio::task::JoinHandle<(String, usize)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = "Internal Server Error: boom";
        let response = format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        (port, tokio::spawn(serve_once(listener, response, 0)))
    }

    #[tokio::test]
    async fn a_preview_on_a_localhost_subdomain_is_reached_on_loopback() {
        let (port, served) = failing_server().await;
        let host = format!("{}.localhost:{port}", uuid::Uuid::new_v4());
        let check = PreviewCheck::new(Duration::from_secs(10));
        let errors = check.errors(&format!("http://{host}/preview/x/")).await;
        assert_eq!(
            errors.map(|d| d.message).as_deref(),
            Some("The preview page answers HTTP 500:\nInternal Server Error: boom")
        );
        let head = served.await.unwrap().0.to_ascii_lowercase();
        assert!(head.contains(&format!("host: {host}")), "{head}");
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        let redirecting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = redirecting.local_addr().unwrap().port();
        let head = format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target_port}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let served = tokio::spawn(serve_once(redirecting, head, 0));
        let check = PreviewCheck::new(Duration::from_secs(10));
        assert_eq!(
            check.errors(&format!("http://127.0.0.1:{port}/")).await,
            None
        );
        served.await.unwrap();
        // The redirect target was never asked.
        let asked = tokio::time::timeout(Duration::ZERO, target.accept()).await;
        assert!(asked.is_err(), "the check followed the redirect");
    }

    #[tokio::test]
    async fn a_huge_error_page_is_read_only_up_to_the_cap() {
        const HUGE: usize = 1 << 30;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let head = format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {HUGE}\r\nconnection: close\r\n\r\n"
        );
        let served = tokio::spawn(serve_once(listener, head, HUGE));
        let check = PreviewCheck::new(Duration::from_secs(60));
        let errors = check
            .errors(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap()
            .message;
        assert!(errors.starts_with("The preview page answers HTTP 500:\nxxx"));
        assert!(errors.len() < MAX_ERROR_CHARS + 100);
        let (_, sent) = served.await.unwrap();
        // What the kernel buffers besides the cap, far from the whole gigabyte.
        assert!(sent < 64 * 1024 * 1024, "{sent} bytes went out");
    }

    #[test]
    fn another_error_page_is_shown_as_it_is_but_capped() {
        let described = describe_failure(502, &"x".repeat(10_000)).message;
        assert!(described.starts_with("The preview page answers HTTP 502:\nxxx"));
        assert!(described.len() < MAX_ERROR_CHARS + 100);
    }
}
