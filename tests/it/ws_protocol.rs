//! GraphQL over WebSocket: both subprotocols, every close code and message flow, against the
//! toy schema on 127.0.0.1:0 with a raw tokio-tungstenite client.

use std::{sync::atomic::Ordering, time::Duration};

use serde_json::json;

use crate::support::{
    toy::{spawn_toy_server, ToyOptions, ToyServer},
    ws_client::{connect, try_connect, Ended, WsClient, LEGACY_WS, TRANSPORT_WS},
};

const BOTH: [&str; 2] = [TRANSPORT_WS, LEGACY_WS];

async fn toy() -> ToyServer {
    toy_with(ToyOptions::default()).await
}

async fn toy_with(options: ToyOptions) -> ToyServer {
    spawn_toy_server("127.0.0.1:0".parse().unwrap(), options).await
}

/// The message names that differ between the subprotocols.
struct Names {
    subscribe: &'static str,
    stop: &'static str,
    next: &'static str,
}

fn names(protocol: &str) -> Names {
    if protocol == LEGACY_WS {
        Names {
            subscribe: "start",
            stop: "stop",
            next: "data",
        }
    } else {
        Names {
            subscribe: "subscribe",
            stop: "complete",
            next: "next",
        }
    }
}

async fn acked(server: &ToyServer, protocol: &str) -> WsClient {
    let mut client = connect(&server.ws_url(), protocol).await;
    client.init(json!({})).await;
    client
}

async fn subscribe(client: &mut WsClient, protocol: &str, id: &str, query: &str) {
    let kind = names(protocol).subscribe;
    client
        .send_json(json!({ "id": id, "type": kind, "payload": { "query": query } }))
        .await;
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn selects_the_offered_subprotocol() {
    let server = toy().await;
    for protocol in BOTH {
        let client = connect(&server.ws_url(), protocol).await;
        assert_eq!(client.protocol.as_deref(), Some(protocol));
    }
    let both = try_connect(&server.ws_url(), Some("graphql-ws, graphql-transport-ws"))
        .await
        .unwrap();
    assert_eq!(both.protocol.as_deref(), Some(TRANSPORT_WS));
}

#[tokio::test]
async fn refuses_unsupported_subprotocols_at_the_handshake() {
    let server = toy().await;
    match try_connect(&server.ws_url(), Some("not-a-graphql-protocol")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("upgrade accepted"),
    }
}

#[tokio::test]
async fn speaks_graphql_transport_ws_without_a_subprotocol_header() {
    let server = toy().await;
    let mut client = try_connect(&server.ws_url(), None).await.unwrap();
    assert_eq!(client.protocol, None);
    client.init(json!({})).await;
    subscribe(&mut client, TRANSPORT_WS, "1", "{ hello }").await;
    assert_eq!(client.recv().await["type"], "next");
}

#[tokio::test]
async fn query_yields_one_result_then_complete() {
    let server = toy().await;
    for protocol in BOTH {
        let n = names(protocol);
        let mut client = acked(&server, protocol).await;
        subscribe(&mut client, protocol, "q1", "{ hello viewer }").await;
        let next = client.recv_skip_ka().await;
        assert_eq!(
            next,
            json!({ "id": "q1", "type": n.next, "payload": { "data": { "hello": "world", "viewer": "anonymous" } } })
        );
        assert_eq!(
            client.recv_skip_ka().await,
            json!({ "id": "q1", "type": "complete" })
        );
    }
}

#[tokio::test]
async fn connection_data_reaches_every_operation_and_each_operation_gets_its_own_data() {
    let server = toy().await;
    for protocol in BOTH {
        let mut client = connect(&server.ws_url(), protocol).await;
        client.init(json!({ "Authorization": "Bearer bob" })).await;
        let mut tags = Vec::new();
        for id in ["a", "b"] {
            subscribe(&mut client, protocol, id, "{ viewer operationTag }").await;
            let next = client.recv_skip_ka().await;
            assert_eq!(next["payload"]["data"]["viewer"], "bob", "{next}");
            tags.push(
                next["payload"]["data"]["operationTag"]
                    .as_i64()
                    .expect("a tag"),
            );
            assert_eq!(client.recv_skip_ka().await["type"], "complete");
        }
        assert_ne!(tags[0], tags[1]);
    }
}

#[tokio::test]
async fn finite_subscription_streams_every_event_then_completes() {
    let server = toy().await;
    for protocol in BOTH {
        let n = names(protocol);
        let mut client = acked(&server, protocol).await;
        subscribe(
            &mut client,
            protocol,
            "s",
            "subscription { countdown(from: 3) }",
        )
        .await;
        for expected in [3, 2, 1] {
            let next = client.recv_skip_ka().await;
            assert_eq!(
                next,
                json!({ "id": "s", "type": n.next, "payload": { "data": { "countdown": expected } } })
            );
        }
        assert_eq!(
            client.recv_skip_ka().await,
            json!({ "id": "s", "type": "complete" })
        );
        // a completed id may be reused
        subscribe(
            &mut client,
            protocol,
            "s",
            "subscription { countdown(from: 1) }",
        )
        .await;
        assert_eq!(
            client.recv_skip_ka().await["payload"]["data"]["countdown"],
            1
        );
    }
}

#[tokio::test]
async fn operations_run_concurrently() {
    let server = toy().await;
    let mut client = acked(&server, TRANSPORT_WS).await;
    subscribe(
        &mut client,
        TRANSPORT_WS,
        "forever",
        "subscription { ticks(everyMs: 10) }",
    )
    .await;
    assert_eq!(client.recv().await["id"], "forever");
    subscribe(&mut client, TRANSPORT_WS, "q", "{ hello }").await;
    let mut seen_query = false;
    while !seen_query {
        let message = client.recv().await;
        if message["id"] == "q" {
            assert_eq!(message["type"], "next");
            seen_query = true;
        }
    }
}

#[tokio::test]
async fn client_complete_stops_a_subscription() {
    let server = toy().await;
    for protocol in BOTH {
        let n = names(protocol);
        let mut client = acked(&server, protocol).await;
        subscribe(
            &mut client,
            protocol,
            "t",
            "subscription { ticks(everyMs: 10) }",
        )
        .await;
        assert_eq!(client.recv_skip_ka().await["type"], n.next);
        client.send_json(json!({ "id": "t", "type": n.stop })).await;
        wait_until("the ticks stream to be dropped", || {
            server.live_ticks.0.load(Ordering::SeqCst) == 0
        })
        .await;
        // events sent before the server saw the stop may still be in flight: a later
        // operation's result is a barrier behind which nothing of "t" may follow
        subscribe(&mut client, protocol, "barrier", "{ hello }").await;
        loop {
            let message = client.recv_skip_ka().await;
            if message["id"] == "barrier" && message["type"] == "complete" {
                break;
            }
        }
        client
            .expect_silence_for("t", Duration::from_millis(200))
            .await;
        // the socket is still usable, and the id is free again
        subscribe(&mut client, protocol, "t", "{ hello }").await;
        assert_eq!(client.recv_skip_ka().await["type"], n.next);
    }
}

#[tokio::test]
async fn closing_the_socket_stops_all_its_streams() {
    let server = toy().await;
    let mut client = acked(&server, TRANSPORT_WS).await;
    for id in ["1", "2", "3"] {
        subscribe(
            &mut client,
            TRANSPORT_WS,
            id,
            "subscription { ticks(everyMs: 10) }",
        )
        .await;
    }
    wait_until("three ticks streams", || {
        server.live_ticks.0.load(Ordering::SeqCst) == 3
    })
    .await;
    client.close().await;
    wait_until("the ticks streams to be dropped", || {
        server.live_ticks.0.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn ping_gets_pong() {
    let server = toy().await;
    let mut client = acked(&server, TRANSPORT_WS).await;
    client
        .send_json(json!({ "type": "ping", "payload": { "t": 1 } }))
        .await;
    assert_eq!(
        client.recv().await,
        json!({ "type": "pong", "payload": { "t": 1 } })
    );
    client.send_json(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await, json!({ "type": "pong" }));
    // a pong from the client is accepted silently
    client.send_json(json!({ "type": "pong" })).await;
    client.send_json(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await["type"], "pong");
}

#[tokio::test]
async fn invalid_document_gets_an_error_and_the_socket_stays_open() {
    let server = toy().await;
    let mut client = acked(&server, TRANSPORT_WS).await;
    subscribe(
        &mut client,
        TRANSPORT_WS,
        "bad",
        "{ thisFieldDoesNotExist }",
    )
    .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "bad");
    assert!(error["payload"][0]["message"]
        .as_str()
        .unwrap()
        .contains("thisFieldDoesNotExist"));
    // no complete follows an error; the socket still answers
    client.send_json(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await["type"], "pong");
    // unparsable documents too
    subscribe(&mut client, TRANSPORT_WS, "bad", "{").await;
    assert_eq!(client.recv().await["type"], "error");
}

#[tokio::test]
async fn field_errors_are_results_not_request_errors() {
    let server = toy().await;
    let mut client = acked(&server, TRANSPORT_WS).await;
    subscribe(&mut client, TRANSPORT_WS, "f", "{ boom }").await;
    let next = client.recv().await;
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(next["payload"]["errors"][0]["message"], "boom");
    assert_eq!(client.recv().await["type"], "complete");
}

#[tokio::test]
async fn legacy_invalid_document_is_a_data_message_with_errors() {
    let server = toy().await;
    let mut client = acked(&server, LEGACY_WS).await;
    subscribe(&mut client, LEGACY_WS, "bad", "{ thisFieldDoesNotExist }").await;
    let data = client.recv_skip_ka().await;
    assert_eq!(data["type"], "data", "{data}");
    assert!(data["payload"]["errors"][0]["message"].is_string());
    assert_eq!(client.recv_skip_ka().await["type"], "complete");
}

#[tokio::test]
async fn unknown_message_type_closes_4400() {
    let server = toy().await;
    for protocol in BOTH {
        let mut client = acked(&server, protocol).await;
        client
            .send_json(json!({ "type": "definitely_not_a_type" }))
            .await;
        assert_eq!(client.expect_close().await.0, 4400, "{protocol}");
    }
    // the other protocol's message names are unknown too
    let mut client = acked(&server, TRANSPORT_WS).await;
    client
        .send_json(json!({ "id": "1", "type": "start", "payload": { "query": "{ hello }" } }))
        .await;
    assert_eq!(client.expect_close().await.0, 4400);
}

#[tokio::test]
async fn invalid_json_closes_4400() {
    let server = toy().await;
    for protocol in BOTH {
        let mut client = acked(&server, protocol).await;
        client.send_text("{not json").await;
        assert_eq!(
            client.expect_close().await,
            (4400, "Invalid message received".into()),
            "{protocol}"
        );
    }
    // before init as well
    let mut client = connect(&server.ws_url(), TRANSPORT_WS).await;
    client.send_text("[]").await;
    assert_eq!(client.expect_close().await.0, 4400);
}

#[tokio::test]
async fn malformed_subscribe_closes_4400() {
    let server = toy().await;
    for message in [
        json!({ "type": "subscribe", "payload": { "query": "{ hello }" } }),
        json!({ "id": "", "type": "subscribe", "payload": { "query": "{ hello }" } }),
        json!({ "id": "1", "type": "subscribe" }),
        json!({ "id": "1", "type": "subscribe", "payload": { "query": 1 } }),
    ] {
        let mut client = acked(&server, TRANSPORT_WS).await;
        client.send_json(message.clone()).await;
        assert_eq!(client.expect_close().await.0, 4400, "{message}");
    }
}

#[tokio::test]
async fn subscribe_before_init_closes_4401() {
    let server = toy().await;
    for protocol in BOTH {
        let mut client = connect(&server.ws_url(), protocol).await;
        subscribe(&mut client, protocol, "early", "{ hello }").await;
        assert_eq!(
            client.expect_close().await,
            (4401, "Unauthorized".into()),
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn duplicate_init_closes_4429() {
    let server = toy().await;
    for protocol in BOTH {
        let mut client = acked(&server, protocol).await;
        client
            .send_json(json!({ "type": "connection_init", "payload": {} }))
            .await;
        assert_eq!(client.expect_close().await.0, 4429, "{protocol}");
    }
}

#[tokio::test]
async fn duplicate_subscription_id_closes_4409() {
    let server = toy().await;
    for protocol in BOTH {
        let mut client = acked(&server, protocol).await;
        subscribe(&mut client, protocol, "dup", "subscription { ticks }").await;
        subscribe(&mut client, protocol, "dup", "subscription { ticks }").await;
        assert_eq!(
            client.expect_close().await,
            (4409, "Subscriber for dup already exists".into()),
            "{protocol}"
        );
    }
    wait_until("the ticks streams to be dropped", || {
        server.live_ticks.0.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn missing_init_closes_4408_after_the_timeout() {
    let server = toy_with(ToyOptions {
        init_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    for protocol in BOTH {
        let mut client = connect(&server.ws_url(), protocol).await;
        let started = std::time::Instant::now();
        assert_eq!(
            client.expect_close().await,
            (4408, "Connection initialisation timeout".into())
        );
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "closed too early"
        );
    }
    // an acknowledged socket outlives the timeout
    let mut client = acked(&server, TRANSPORT_WS).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.send_json(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await["type"], "pong");
}

#[tokio::test]
async fn refused_connection_init_closes_4403() {
    let server = toy_with(ToyOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    for payload in [
        json!({}),
        json!(null),
        json!({ "Authorization": "Bearer wrong" }),
    ] {
        let mut client = connect(&server.ws_url(), TRANSPORT_WS).await;
        client
            .send_json(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(
            client.expect_close().await,
            (4403, "Forbidden".into()),
            "{payload}"
        );
    }
    // legacy: connection_error first, then the close
    let mut client = connect(&server.ws_url(), LEGACY_WS).await;
    client
        .send_json(json!({ "type": "connection_init", "payload": {} }))
        .await;
    assert_eq!(
        client.recv().await,
        json!({ "type": "connection_error", "payload": { "message": "Forbidden" } })
    );
    assert_eq!(client.expect_close().await.0, 4403);
    // the right token is accepted and its viewer is seen by operations
    let mut client = connect(&server.ws_url(), TRANSPORT_WS).await;
    client
        .init(json!({ "Authorization": "Bearer s3cret" }))
        .await;
    subscribe(&mut client, TRANSPORT_WS, "v", "{ viewer }").await;
    assert_eq!(client.recv().await["payload"]["data"]["viewer"], "alice");
}

#[tokio::test]
async fn legacy_sends_keep_alives_and_honours_connection_terminate() {
    let server = toy_with(ToyOptions {
        legacy_keep_alive: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let mut client = connect(&server.ws_url(), LEGACY_WS).await;
    client.init(json!({})).await;
    for _ in 0..3 {
        assert_eq!(client.recv().await, json!({ "type": "ka" }));
    }
    client
        .send_json(json!({ "type": "connection_terminate" }))
        .await;
    assert_eq!(client.expect_close().await.0, 1000);
    // the transport-ws protocol never sends `ka`
    let mut client = acked(&server, TRANSPORT_WS).await;
    assert_eq!(
        client.next_within(Duration::from_millis(200)).await,
        Err(Ended::Silent)
    );
}

#[tokio::test]
async fn init_payload_may_be_absent() {
    let server = toy().await;
    let mut client = connect(&server.ws_url(), TRANSPORT_WS).await;
    client.send_json(json!({ "type": "connection_init" })).await;
    assert_eq!(client.recv().await["type"], "connection_ack");
}

#[tokio::test]
async fn a_message_over_the_limit_closes_1009() {
    let server = toy_with(ToyOptions {
        max_message_bytes: 256,
        ..ToyOptions::default()
    })
    .await;
    for protocol in BOTH {
        let mut client = acked(&server, protocol).await;
        let padded = format!("{{ hello }} #{}", "x".repeat(300));
        subscribe(&mut client, protocol, "big", &padded).await;
        assert_eq!(client.expect_close().await.0, 1009, "{protocol}");
    }
}

#[tokio::test]
async fn operations_over_the_cap_get_an_error_and_the_socket_stays_open() {
    let server = toy_with(ToyOptions {
        max_operations: 1,
        ..ToyOptions::default()
    })
    .await;
    for protocol in BOTH {
        let n = names(protocol);
        let mut client = acked(&server, protocol).await;
        subscribe(&mut client, protocol, "t1", "subscription { ticks }").await;
        subscribe(&mut client, protocol, "t2", "subscription { ticks }").await;
        let refused = loop {
            let message = client.recv_skip_ka().await;
            if message["id"] == "t2" {
                break message;
            }
        };
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
        // Stopping the first makes room again.
        client
            .send_json(json!({ "id": "t1", "type": n.stop }))
            .await;
        subscribe(&mut client, protocol, "q", "{ hello }").await;
        let answer = loop {
            let message = client.recv_skip_ka().await;
            if message["id"] == "q" {
                break message;
            }
        };
        assert_eq!(answer["type"], n.next, "{answer}");
    }
}
