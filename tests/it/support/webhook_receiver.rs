//! A webhook endpoint on 127.0.0.1 that records every request and answers scripted statuses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use tokio::sync::watch;

/// A request as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// The status it was answered with.
    pub answered: u16,
}

struct Shared {
    requests: Mutex<Vec<ReceivedWebhook>>,
    /// Answered in order; then `then`.
    script: Mutex<VecDeque<u16>>,
    then: Mutex<u16>,
    count: watch::Sender<usize>,
}

pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl WebhookReceiver {
    /// Answers `script`'s statuses in order, then `then` to every request.
    pub async fn start(script: impl IntoIterator<Item = u16>, then: u16) -> Self {
        let shared = Arc::new(Shared {
            requests: Mutex::default(),
            script: Mutex::new(script.into_iter().collect()),
            then: Mutex::new(then),
            count: watch::channel(0).0,
        });
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// What every request after the script is answered with from now on.
    pub fn answer(&self, status: u16) {
        *self.shared.then.lock().unwrap() = status;
    }

    pub fn requests(&self) -> Vec<ReceivedWebhook> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until the requests so far satisfy `done`; fails the test after a minute (a hang).
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[ReceivedWebhook]) -> bool,
    ) -> Vec<ReceivedWebhook> {
        let mut count = self.shared.count.subscribe();
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            count.wait_for(|_| done(&self.requests())),
        )
        .await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "the endpoint never got {what}: {:#?}",
            self.requests()
        );
        self.requests()
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let scripted = shared.script.lock().unwrap().pop_front();
    let answered = scripted.unwrap_or_else(|| *shared.then.lock().unwrap());
    shared.requests.lock().unwrap().push(ReceivedWebhook {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        answered,
    });
    shared.count.send_modify(|count| *count += 1);
    StatusCode::from_u16(answered).unwrap()
}
