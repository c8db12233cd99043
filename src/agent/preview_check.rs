//! The check after the type check: the preview itself. A page that type-checks can still fail
//! to render (a hook in a Server Component, an import that does not resolve); `next dev` then
//! answers 500 and puts the error in the page's `__NEXT_DATA__`. That error goes back to the
//! model like a failed build check.

use std::time::Duration;

/// What a model gets to read of a failing page at most.
const MAX_ERROR_CHARS: usize = 4000;

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
            .build()
            .expect("a reqwest client without proxies always builds");
        Self { http, timeout }
    }

    /// `Some(error)` when the preview answers with a server error. A preview that cannot be
    /// reached says nothing about the app (the server may not reach its own public URL): that
    /// passes, with a warning in the log.
    pub async fn errors(&self, url: &str) -> Option<String> {
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
        let body = response.text().await.unwrap_or_default();
        Some(describe_failure(status.as_u16(), &body))
    }
}

/// The error `next dev` embedded in its error page, else the start of the body.
fn describe_failure(status: u16, body: &str) -> String {
    let message = next_data_error(body).unwrap_or_else(|| body.trim().to_owned());
    let message: String = message.chars().take(MAX_ERROR_CHARS).collect();
    format!(
        "The preview page answers HTTP {status}:\n{}",
        message.trim()
    )
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
        assert!(described.starts_with("The preview page answers HTTP 500:\n./app/page.tsx:1:10"));
        assert!(described.contains("`useState`"));
        assert!(!described.contains("<script"));
    }

    #[test]
    fn another_error_page_is_shown_as_it_is_but_capped() {
        let described = describe_failure(502, &"x".repeat(10_000));
        assert!(described.starts_with("The preview page answers HTTP 502:\nxxx"));
        assert!(described.len() < MAX_ERROR_CHARS + 100);
    }
}
