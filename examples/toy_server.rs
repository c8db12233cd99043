//! A toy GraphQL server (HTTP `/graphql` + WS `/graphql/ws`) for running conformance tools
//! by hand: `cargo run --example toy_server -- 127.0.0.1:4000 [TOKEN]`.
//! With a TOKEN, `connection_init` must carry `{Authorization: "Bearer TOKEN"}`.

#[path = "../tests/it/support/toy.rs"]
mod toy;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4000".into());
    let options = toy::ToyOptions {
        token: args.next(),
        init_timeout: Duration::from_millis(
            std::env::var("INIT_TIMEOUT_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000),
        ),
        ..Default::default()
    };
    let server = toy::spawn_toy_server(addr.parse().expect("address"), options).await;
    println!(
        "toy server on {} and {}",
        server.http_url(),
        server.ws_url()
    );
    std::future::pending::<()>().await;
}
