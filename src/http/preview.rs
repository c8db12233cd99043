//! The preview listener: a reverse proxy to local sandboxes' dev servers, each sandbox on an
//! origin of its own (see [`PreviewOrigin`]), found by the first label of the request's Host.
//! `next dev` runs with `basePath` `/preview/{sandbox_id}` (a running dev server cannot change
//! it, and the warm pool starts them before they are claimed), so paths are forwarded
//! unchanged: `http://{id}.localhost:8081/preview/{id}/`. A project's sandbox id is its project
//! id unless the sandbox came from the warm pool. Starts the dev server on demand and counts
//! every request as activity for the idle timer.
//!
//! WebSocket upgrades (Next's HMR socket) are tunnelled as raw bytes to the dev server. A
//! request in flight or an open tunnel keeps the sandbox busy, so the idle timer never stops
//! a dev server that is answering, and a preview tab that is open keeps it alive.
//!
//! The main listener only redirects the `/preview/{id}/…` links of earlier versions here
//! ([`redirects_to_origin`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::sandbox::local::{ActivityGuard, LocalSandboxProvider, PreviewOrigin};
use crate::sandbox::SandboxError;

#[derive(Clone)]
struct PreviewState {
    sandboxes: Arc<LocalSandboxProvider>,
    http: reqwest::Client,
}

/// The preview listener's router: every request goes to the dev server of its Host's sandbox.
pub fn router(sandboxes: Arc<LocalSandboxProvider>) -> Router {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client without TLS roots or proxies always builds");
    Router::new()
        .fallback(proxy)
        .with_state(PreviewState { sandboxes, http })
}

/// For the main listener: `/preview/{id}/…` (the preview links of earlier versions, still in
/// stored fragments) redirects to the same path on the sandbox's preview origin. Previews are
/// never served on the web client's origin.
pub fn redirects_to_origin(origin: PreviewOrigin) -> Router {
    Router::new()
        .route("/preview/{sandbox_id}", any(redirect_to_origin))
        .route("/preview/{sandbox_id}/", any(redirect_to_origin))
        .route("/preview/{sandbox_id}/{*rest}", any(redirect_to_origin))
        .with_state(Arc::new(origin))
}

async fn redirect_to_origin(
    State(origin): State<Arc<PreviewOrigin>>,
    Path(params): Path<HashMap<String, String>>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let Some(sandbox_id) = params
        .get("sandbox_id")
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return (StatusCode::NOT_FOUND, "unknown sandbox\n").into_response();
    };
    temporary_redirect(format!(
        "{}{}",
        origin.url_of(sandbox_id),
        path_and_query(&uri)
    ))
}

/// 307: the method and body are kept, and nothing is cached for good (the preview origin is
/// configuration).
fn temporary_redirect(location: String) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
}

/// Connection-level headers that a proxy must not forward.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Response headers a preview may not send, whatever the generated app does: cookies (with
/// `Domain=` they would reach every preview, and the web client when it shares the registrable
/// domain), a service worker scope wider than its script's folder, and `Clear-Site-Data` (its
/// `cookies` directive clears the whole registrable domain).
const UNSAFE_RESPONSE_HEADERS: &[&str] =
    &["set-cookie", "service-worker-allowed", "clear-site-data"];

fn strip_unsafe_response_headers(headers: &mut HeaderMap) {
    for name in UNSAFE_RESPONSE_HEADERS {
        headers.remove(*name);
    }
}

fn error_response(err: &SandboxError) -> Response {
    let status = match err {
        SandboxError::NotFound(_) | SandboxError::PathRefused(_) => StatusCode::NOT_FOUND,
        SandboxError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    if status != StatusCode::NOT_FOUND {
        tracing::warn!(error = %err, "preview unavailable");
    }
    (status, format!("preview unavailable: {err}\n")).into_response()
}

/// The Host a request was sent to (the URI's authority for HTTP/2).
fn request_host(request: &Request) -> Option<&str> {
    request
        .uri()
        .host()
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok())
}

async fn proxy(State(state): State<PreviewState>, request: Request) -> Response {
    let Some(sandbox_id) = request_host(&request).and_then(PreviewOrigin::sandbox_in_host) else {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no preview at this host: previews are at {}\n",
                state.sandboxes.config().preview_origin
            ),
        )
            .into_response();
    };
    let uri = request.uri().clone();
    let sandbox = match state.sandboxes.sandbox(sandbox_id).await {
        Ok(sandbox) => sandbox,
        // The preview of a project whose sandbox came from the warm pool.
        Err(SandboxError::NotFound(_))
            if let Some(pooled) = state.sandboxes.pooled_sandbox_of(sandbox_id) =>
        {
            let path = path_and_query(&uri).replacen(
                &format!("/preview/{sandbox_id}"),
                &format!("/preview/{pooled}"),
                1,
            );
            let origin = &state.sandboxes.config().preview_origin;
            return temporary_redirect(format!("{}{path}", origin.url_of(pooled)));
        }
        Err(err) => return error_response(&err),
    };
    // Held until the response body is sent (or the tunnel closes): the idle timer never stops
    // a dev server that is answering.
    let busy = sandbox.hold();
    let port = match sandbox.ensure_dev_server().await {
        Ok(port) => port,
        Err(err) => return error_response(&err),
    };

    // The dev server serves the same paths (its basePath is `/preview/{sandbox_id}`).
    let path_and_query = path_and_query(&uri);
    let url = format!("http://127.0.0.1:{port}{path_and_query}");

    if is_upgrade(request.headers()) {
        return tunnel_upgrade(busy, port, path_and_query.to_owned(), request).await;
    }

    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    let has_body = headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING);
    strip_hop_by_hop(&mut headers);
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
    let mut upstream = state.http.request(parts.method, url).headers(headers);
    if has_body {
        upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let response = match upstream.send().await {
        Ok(response) => response,
        Err(err) => {
            return error_response(&SandboxError::Unavailable(format!(
                "dev server request failed: {err}"
            )))
        }
    };
    let status = response.status();
    let mut headers = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    strip_unsafe_response_headers(&mut headers);
    let body = response.bytes_stream().map(move |chunk| {
        let _busy = &busy;
        chunk
    });
    let mut proxied = Response::new(Body::from_stream(body));
    *proxied.status_mut() = status;
    *proxied.headers_mut() = headers;
    proxied
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// Forwards the upgrade request to the dev server over a raw TCP connection; when it answers
/// `101`, answers the client the same and copies bytes both ways until either side closes.
async fn tunnel_upgrade(
    busy: ActivityGuard,
    port: u16,
    path_and_query: String,
    mut request: Request,
) -> Response {
    let bad_gateway = |what: String| {
        error_response(&SandboxError::Unavailable(format!(
            "websocket upgrade: {what}"
        )))
    };
    let mut upstream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(stream) => stream,
        Err(err) => return bad_gateway(err.to_string()),
    };
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method(), path_and_query);
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    if let Err(err) = upstream.write_all(head.as_bytes()).await {
        return bad_gateway(err.to_string());
    }
    let (status, mut headers, leftover) = match read_response_head(&mut upstream).await {
        Ok(parsed) => parsed,
        Err(err) => return bad_gateway(err),
    };
    // `Connection: upgrade` and `Upgrade` stay: the client needs them in the 101.
    strip_unsafe_response_headers(&mut headers);
    let mut response = Response::new(Body::from(if status == StatusCode::SWITCHING_PROTOCOLS {
        Vec::new()
    } else {
        leftover.clone()
    }));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }

    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let _busy = busy;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%err, "preview websocket upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    response
}

/// Reads an HTTP/1.1 response head; returns the status, headers and any bytes read past it.
async fn read_response_head(
    stream: &mut TcpStream,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), String> {
    const MAX_HEAD: usize = 64 * 1024;
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buffer.len() > MAX_HEAD {
            return Err("response head too large".into());
        }
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .map_err(|_| "dev server did not answer".to_owned())?
            .map_err(|err| err.to_string())?;
        if read == 0 {
            return Err("dev server closed the connection".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let leftover = buffer[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.trim()),
                HeaderValue::try_from(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
    }
    Ok((status, headers, leftover))
}
