//! Headers on every response of the main listener: no MIME sniffing, no referrer, and a CSP
//! that lets the web client load only its own files, frame only previews, and be framed by no
//! one. GraphiQL (inline scripts from a CDN) keeps only the framing rule.

use axum::http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::HeaderValue;
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::AppState;
use crate::config::SandboxProviderKind;

pub const GRAPHIQL_CSP: &str = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'";

pub fn apply(router: Router, state: &AppState) -> Router {
    let csp = HeaderValue::from_str(&web_client_csp(&preview_sources(state)))
        .expect("preview origins are valid header text");
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

/// GraphiQL's own CSP, set on its route (the router-wide one only fills in a missing CSP).
pub fn graphiql_csp() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(GRAPHIQL_CSP),
    )
}

/// Where previews live: each local sandbox on an origin of its own, E2B's on its domain.
fn preview_sources(state: &AppState) -> Vec<String> {
    if let Some(local) = &state.local_sandboxes {
        return vec![local.config().preview_origin.csp_source()];
    }
    match state.config.sandbox_provider_kind() {
        SandboxProviderKind::E2b => vec![format!("https://*.{}", state.config.e2b_domain)],
        SandboxProviderKind::Local => Vec::new(),
    }
}

fn web_client_csp(preview_sources: &[String]) -> String {
    let frames = if preview_sources.is_empty() {
        "'self'".to_owned()
    } else {
        preview_sources.join(" ")
    };
    // `connect-src 'self'` covers the same host's ws:// as well (CSP 3).
    format!(
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-src {frames}; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_may_be_framed_and_nothing_frames_the_client() {
        let csp = web_client_csp(&["http://*.localhost:8081".to_owned()]);
        assert!(csp.contains("frame-src http://*.localhost:8081;"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'self'"), "{csp}");
    }
}
