//! Retry policy shared by the HTTP providers (llm-apis.md §0, §1.7, §2.5).
//!
//! Retries connect/read errors and 408/429/500/502/503/504/529 with exponential backoff and
//! jitter, honours a server-supplied delay (`retry-after-ms`, `Retry-After`, Gemini
//! `RetryInfo.retryDelay`), caps the total wait, and never retries 400/401/403/404/413/422,
//! a daily quota, OpenAI's `insufficient_quota`, Anthropic's spend limit, or anything after streamed text reached the
//! caller (the providers mark such failures as final).

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::ModelError;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// First backoff delay; doubled per retry, then jittered down to 50–100 %.
    pub base_delay: Duration,
    /// Cap of one computed backoff delay.
    pub max_delay: Duration,
    /// A server asking to wait longer than this is not retried (the error is returned).
    pub max_server_delay: Duration,
    /// Cap of the total time spent waiting between attempts.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_server_delay: Duration::from_secs(120),
            max_total_wait: Duration::from_secs(180),
        }
    }
}

impl RetryPolicy {
    pub fn with_max_retries(max_retries: u32) -> Self {
        Self {
            max_retries,
            ..Self::default()
        }
    }

    /// Backoff before retry number `retry` (0-based), with jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(16)));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// The wait before retry number `retry`, or `None` when the server asks for too long.
    pub fn delay(&self, retry: u32, server_delay: Option<Duration>) -> Option<Duration> {
        match server_delay {
            Some(d) if d > self.max_server_delay => None,
            Some(d) => Some(d),
            None => Some(self.backoff(retry)),
        }
    }
}

/// A failed attempt and whether it may be retried.
#[derive(Debug)]
pub struct Failure {
    pub error: ModelError,
    pub retryable: bool,
    /// Delay the server asked for, if any.
    pub server_delay: Option<Duration>,
}

impl Failure {
    pub fn retryable(error: ModelError) -> Self {
        Self {
            error,
            retryable: true,
            server_delay: None,
        }
    }

    pub fn fatal(error: ModelError) -> Self {
        Self {
            error,
            retryable: false,
            server_delay: None,
        }
    }
}

/// Runs `attempt` (given the 0-based attempt number) until it succeeds, fails for good, or the
/// policy is used up.
pub async fn with_retries<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, ModelError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut waited = Duration::ZERO;
    let mut n = 0u32;
    loop {
        let failure = match attempt(n).await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        if !failure.retryable || n >= policy.max_retries {
            return Err(failure.error);
        }
        let Some(delay) = policy.delay(n, failure.server_delay) else {
            tracing::warn!(error = %failure.error, "model server asked to wait too long; not retrying");
            return Err(failure.error);
        };
        if waited + delay > policy.max_total_wait {
            return Err(failure.error);
        }
        tracing::warn!(error = %failure.error, attempt = n + 1, delay_ms = delay.as_millis() as u64, "retrying model request");
        tokio::time::sleep(delay).await;
        waited += delay;
        n += 1;
    }
}

/// Statuses worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// Failure of a request that reached the network layer but got no usable response.
pub fn transport_failure(err: &reqwest::Error) -> Failure {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    Failure::retryable(ModelError::Unavailable(format!("{kind}: {err}")))
}

/// Sends a request; a transport error or a non-2xx status becomes a classified [`Failure`]
/// (the error body is read: it is plain JSON, not SSE).
pub async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
    let response = request.send().await.map_err(|e| transport_failure(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Err(status_failure(status.as_u16(), &headers, &body))
}

/// Classifies a non-2xx response from its status, headers and body.
pub fn status_failure(status: u16, headers: &HeaderMap, body: &str) -> Failure {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(error_message)
        .unwrap_or_else(|| truncate(body.trim(), 500).to_owned());
    let message = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    };

    let mut retryable = is_retryable_status(status);
    if let Some(should) = headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
        retryable = should.eq_ignore_ascii_case("true");
    }
    if let Some(body) = &parsed {
        if is_hard_quota(body) {
            retryable = false;
        }
    }
    let server_delay =
        parse_retry_after(headers).or_else(|| parsed.as_ref().and_then(google_retry_delay));
    let error = if retryable {
        ModelError::Unavailable(format!("HTTP {status}: {message}"))
    } else {
        ModelError::Rejected { status, message }
    };
    Failure {
        error,
        retryable,
        server_delay,
    }
}

/// The human message of an error body in any of the shapes of §1.7 / §2.5.
fn error_message(body: &Value) -> Option<String> {
    let body = match body {
        Value::Array(items) => items.first()?,
        other => other,
    };
    match body.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(err) => err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
        None => body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

fn error_object(body: &Value) -> Option<&Value> {
    match body {
        Value::Array(items) => items.first()?.get("error"),
        other => other.get("error"),
    }
}

/// A daily quota (Gemini `…PerDay…` quota id), OpenAI billing quota or Anthropic spend limit:
/// waiting will not help.
fn is_hard_quota(body: &Value) -> bool {
    let Some(err) = error_object(body) else {
        return false;
    };
    if err.get("code").and_then(Value::as_str) == Some("insufficient_quota")
        || err.pointer("/details/error_code").and_then(Value::as_str)
            == Some("enforced_spend_limit_reached")
    {
        return true;
    }
    let details = err
        .get("details")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    details.iter().any(|d| {
        d.get("violations")
            .and_then(Value::as_array)
            .is_some_and(|vs| {
                vs.iter().any(|v| {
                    v.get("quotaId")
                        .and_then(Value::as_str)
                        .is_some_and(|id| id.contains("PerDay"))
                })
            })
    })
}

/// `RetryInfo.retryDelay` from a Google error body.
fn google_retry_delay(body: &Value) -> Option<Duration> {
    let details = error_object(body)?.get("details")?.as_array()?;
    details
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| {
            d.get("retryDelay")
                .and_then(Value::as_str)
                .and_then(parse_proto_duration)
        })
}

/// A protobuf JSON Duration: `"38s"`, `"57.238747106s"`.
pub fn parse_proto_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// `retry-after-ms` (milliseconds) or `Retry-After` (seconds, fractional allowed, or HTTP date).
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn proto_durations() {
        assert_eq!(parse_proto_duration("38s"), Some(Duration::from_secs(38)));
        assert_eq!(
            parse_proto_duration("0.5s"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_proto_duration("38"), None);
        assert_eq!(parse_proto_duration("-1s"), None);
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("1.5"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn gemini_429_with_retry_info() {
        let body = r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"38.5s"}]}}"#;
        let f = status_failure(429, &HeaderMap::new(), body);
        assert!(f.retryable);
        assert_eq!(f.server_delay, Some(Duration::from_millis(38_500)));
        assert!(matches!(f.error, ModelError::Unavailable(ref m) if m.contains("slow down")));
    }

    #[test]
    fn daily_quota_is_not_retried() {
        let body = r#"[{"error":{"code":429,"message":"quota","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure",
            "violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}]"#;
        let f = status_failure(429, &HeaderMap::new(), body);
        assert!(!f.retryable);
        assert!(matches!(f.error, ModelError::Rejected { status: 429, .. }));
    }

    #[test]
    fn client_errors_are_rejected_with_message() {
        for (body, msg) in [
            (
                r#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#,
                "bad key",
            ),
            (
                r#"{"object":"error","message":"flat vllm","code":400}"#,
                "flat vllm",
            ),
            (r#"{"error":"ollama native"}"#, "ollama native"),
            ("not json at all", "not json at all"),
        ] {
            let f = status_failure(400, &HeaderMap::new(), body);
            assert!(!f.retryable);
            match f.error {
                ModelError::Rejected { status, message } => {
                    assert_eq!(status, 400);
                    assert_eq!(message, msg);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn anthropic_overload_is_retried_but_not_a_spend_limit() {
        let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
        let f = status_failure(529, &HeaderMap::new(), overloaded);
        assert!(f.retryable);
        assert!(matches!(f.error, ModelError::Unavailable(ref m) if m.contains("Overloaded")));
        let spent = r#"{"type":"error","error":{"type":"rate_limit_error","message":"spend limit",
            "details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        assert!(!status_failure(429, &HeaderMap::new(), spent).retryable);
    }

    #[test]
    fn x_should_retry_overrides() {
        let mut h = HeaderMap::new();
        h.insert("x-should-retry", HeaderValue::from_static("false"));
        assert!(!status_failure(503, &h, "").retryable);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 0..10 {
            let d = p.backoff(retry);
            let full = p.base_delay.saturating_mul(1 << retry).min(p.max_delay);
            assert!(d >= full / 2 && d <= full, "{retry}: {d:?}");
        }
        assert_eq!(p.delay(0, Some(Duration::from_secs(500))), None);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
    }

    #[tokio::test]
    async fn stops_on_fatal_and_after_max_retries() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::with_max_retries(2)
        };
        let mut calls = 0;
        let r: Result<(), _> = with_retries(&policy, |_| {
            calls += 1;
            async { Err(Failure::retryable(ModelError::Unavailable("x".into()))) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<(), _> = with_retries(&policy, |_| {
            calls += 1;
            async { Err(Failure::fatal(ModelError::Protocol("x".into()))) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
