//! The real E2B client against the local fake (support/fake_e2b.rs), which checks the documented
//! wire format and records anything that drifts from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codekraft::sandbox::e2b::{E2bConfig, E2bSandboxProvider, DEV_SERVER_TAG, METADATA_PROJECT_ID};
use codekraft::sandbox::{
    CommandSpec, FileMap, OutputSink, Sandbox, SandboxError, SandboxProvider, MAX_FILE_BYTES,
    MAX_LISTED_ENTRIES,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::fake_e2b::FakeE2b;
use crate::support::output::{joined, recorder};

struct Harness {
    fake: FakeE2b,
    provider: E2bSandboxProvider,
}

impl Harness {
    async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    async fn with_config(tweak: impl FnOnce(&mut E2bConfig)) -> Self {
        let fake = FakeE2b::start().await;
        let mut config = fake.config();
        tweak(&mut config);
        let provider = E2bSandboxProvider::new(config).unwrap();
        Self { fake, provider }
    }

    /// A new project's sandbox, reconnecting to `existing` when given.
    async fn connect(&self, existing: Option<&str>) -> Result<Arc<dyn Sandbox>, SandboxError> {
        self.provider
            .connect(Uuid::new_v4(), existing, &FileMap::new())
            .await
    }

    async fn sandbox(&self) -> Arc<dyn Sandbox> {
        self.connect(None).await.unwrap()
    }

    fn assert_no_violations(&self) {
        let v = self.fake.violations();
        assert!(v.is_empty(), "wire-format violations: {v:#?}");
    }
}

async fn run_with(
    sandbox: &dyn Sandbox,
    spec: CommandSpec,
    cancel: CancellationToken,
) -> Result<codekraft::sandbox::CommandOutput, SandboxError> {
    sandbox
        .run_command(spec, &mut OutputSink::discard(), cancel)
        .await
}

async fn run(
    sandbox: &dyn Sandbox,
    spec: CommandSpec,
) -> Result<codekraft::sandbox::CommandOutput, SandboxError> {
    sandbox
        .run_command(spec, &mut OutputSink::discard(), CancellationToken::new())
        .await
}

#[tokio::test]
async fn create_sends_template_timeout_and_project_metadata() {
    let h = Harness::new().await;
    let project = Uuid::new_v4();
    let sandbox = h
        .provider
        .connect(project, None, &FileMap::new())
        .await
        .unwrap();
    assert_eq!(h.provider.kind(), "e2b");
    assert!(sandbox.id().starts_with('i'));
    assert_eq!(h.fake.creates(), 1);
    assert_eq!(h.fake.timeout_secs(sandbox.id()), 600);
    assert_eq!(
        h.fake.metadata(sandbox.id())[METADATA_PROJECT_ID],
        project.to_string()
    );
    h.assert_no_violations();
}

#[tokio::test]
async fn reconnects_to_a_live_sandbox_without_restoring() {
    let h = Harness::new().await;
    let first = h.sandbox().await;
    let restore = FileMap::from([("app/page.tsx".to_string(), "stale".to_string())]);
    let again = h
        .provider
        .connect(Uuid::new_v4(), Some(first.id()), &restore)
        .await
        .unwrap();
    assert_eq!(again.id(), first.id());
    assert_eq!(h.fake.creates(), 1);
    assert_eq!(h.fake.file(first.id(), "app/app/page.tsx"), None);
    let connect = format!("POST /sandboxes/{}/connect -> 200", first.id());
    assert!(
        h.fake.requests().contains(&connect),
        "{:#?}",
        h.fake.requests()
    );
    // The handle works with the token the connect call returned.
    again.write_file("a.txt", "x").await.unwrap();
    h.assert_no_violations();
}

#[tokio::test]
async fn envd_token_is_checked_and_renewed_on_reconnect() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    sb.write_file("a.txt", "1").await.unwrap();
    h.fake.rotate_token(sb.id());
    let err = sb.read_file("a.txt").await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("401")),
        "{err:?}"
    );
    let err = run(
        sb.as_ref(),
        CommandSpec::new("true", Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("401")),
        "{err:?}"
    );

    let again = h
        .provider
        .connect(Uuid::new_v4(), Some(sb.id()), &FileMap::new())
        .await
        .unwrap();
    assert_eq!(again.read_file("a.txt").await.unwrap(), "1");
    h.assert_no_violations();
}

#[tokio::test]
async fn expired_sandbox_is_replaced_and_files_restored() {
    let h = Harness::new().await;
    let old = h.sandbox().await;
    let old_id = old.id().to_owned();
    h.fake.expire(&old_id);

    let restore = FileMap::from([
        (
            "app/page.tsx".to_string(),
            "export default function Page() { return <h1>héllo</h1> }\n".to_string(),
        ),
        (
            "lib/util.ts".to_string(),
            "export const x = 1;\n".to_string(),
        ),
    ]);
    let fresh = h
        .provider
        .connect(Uuid::new_v4(), Some(&old_id), &restore)
        .await
        .unwrap();
    assert_ne!(fresh.id(), old_id);
    assert_eq!(h.fake.creates(), 2);
    assert_eq!(
        h.fake.file(fresh.id(), "app/app/page.tsx").as_deref(),
        Some(restore["app/page.tsx"].as_str())
    );
    assert_eq!(
        h.fake.file(fresh.id(), "app/lib/util.ts").as_deref(),
        Some("export const x = 1;\n")
    );
    assert!(h
        .fake
        .requests()
        .contains(&format!("POST /sandboxes/{old_id}/connect -> 404")));
    h.assert_no_violations();
}

#[tokio::test]
async fn malformed_existing_id_creates_new_sandbox() {
    let h = Harness::new().await;
    let sandbox = h.connect(Some("../../etc")).await.unwrap();
    assert!(h.fake.is_alive(sandbox.id()));
    assert!(!h.fake.requests().iter().any(|r| r.contains("etc")));
    h.assert_no_violations();
}

#[tokio::test]
async fn files_round_trip_and_list_without_build_dirs() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let content = "const s = \"ünïcode → ok\";\n";
    sb.write_file("app/page.tsx", content).await.unwrap();
    sb.write_file("./app/components/button.tsx", "b")
        .await
        .unwrap();
    assert_eq!(sb.read_file("app/page.tsx").await.unwrap(), content);
    assert_eq!(
        h.fake.file(sb.id(), "app/app/page.tsx").as_deref(),
        Some(content)
    );
    // Overwrite.
    sb.write_file("app/page.tsx", "v2").await.unwrap();
    assert_eq!(sb.read_file("app/page.tsx").await.unwrap(), "v2");

    assert!(matches!(
        sb.read_file("missing.txt").await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(matches!(
        sb.read_file("app").await,
        Err(SandboxError::NotFound(_))
    ));

    h.fake
        .put_file(sb.id(), "app/.git/HEAD", "ref: refs/heads/main");
    let all = sb.list_files("").await.unwrap();
    assert_eq!(
        all,
        vec!["app/components/button.tsx", "app/page.tsx", "package.json"]
    );
    assert_eq!(
        sb.list_files("app").await.unwrap(),
        vec!["app/components/button.tsx", "app/page.tsx"]
    );
    assert!(matches!(
        sb.list_files("nope").await,
        Err(SandboxError::NotFound(_))
    ));

    // Removing: the file is gone, and a file that is already gone is fine.
    sb.remove_file("app/components/button.tsx").await.unwrap();
    assert_eq!(h.fake.file(sb.id(), "app/app/components/button.tsx"), None);
    sb.remove_file("app/components/button.tsx").await.unwrap();
    assert!(matches!(
        sb.remove_file("../outside").await,
        Err(SandboxError::PathRefused(_))
    ));
    h.assert_no_violations();
}

#[tokio::test]
async fn escaping_paths_are_refused_before_any_request() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let before = h.fake.requests().len();
    for path in ["../x", "/etc/passwd", "a/../../b", "~/.bashrc"] {
        assert!(
            matches!(
                sb.write_file(path, "x").await,
                Err(SandboxError::PathRefused(_))
            ),
            "{path}"
        );
        assert!(
            matches!(sb.read_file(path).await, Err(SandboxError::PathRefused(_))),
            "{path}"
        );
        assert!(
            matches!(sb.list_files(path).await, Err(SandboxError::PathRefused(_))),
            "{path}"
        );
    }
    let mut spec = CommandSpec::new("true", Duration::from_secs(5));
    spec.cwd = Some("..".into());
    assert!(matches!(
        run(sb.as_ref(), spec).await,
        Err(SandboxError::PathRefused(_))
    ));
    assert_eq!(h.fake.requests().len(), before);
}

#[tokio::test]
async fn reads_and_listings_are_bounded() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    h.fake
        .put_file(sb.id(), "app/at-limit.txt", &"a".repeat(MAX_FILE_BYTES));
    h.fake
        .put_file(sb.id(), "app/over.txt", &"a".repeat(MAX_FILE_BYTES + 1));
    assert_eq!(
        sb.read_file("at-limit.txt").await.unwrap().len(),
        MAX_FILE_BYTES
    );
    match sb.read_file("over.txt").await {
        Err(SandboxError::TooLarge(why)) => {
            assert!(why.contains(&MAX_FILE_BYTES.to_string()), "{why}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }

    for i in 0..MAX_LISTED_ENTRIES {
        h.fake.put_file(sb.id(), &format!("app/many/{i}"), "");
    }
    assert_eq!(
        sb.list_files("many").await.unwrap().len(),
        MAX_LISTED_ENTRIES
    );
    h.fake.put_file(sb.id(), "app/many/one-more", "");
    for dir in ["many", ""] {
        assert!(
            matches!(sb.list_files(dir).await, Err(SandboxError::TooLarge(_))),
            "{dir:?}"
        );
    }
    h.assert_no_violations();
}

#[tokio::test]
async fn file_operations_that_hang_end_with_a_timeout() {
    let h = Harness::with_config(|c| c.file_timeout = Duration::from_millis(200)).await;
    let sb = h.sandbox().await;
    h.fake.stall_files(Duration::from_secs(600));
    let timed_out = |result: Result<(), SandboxError>| {
        assert!(
            matches!(result, Err(SandboxError::Timeout(_))),
            "{result:?}"
        )
    };
    // The guard only keeps a broken client from hanging the suite.
    tokio::time::timeout(Duration::from_secs(60), async {
        timed_out(sb.read_file("page.tsx").await.map(|_| ()));
        timed_out(sb.write_file("page.tsx", "x").await);
        timed_out(sb.list_files("").await.map(|_| ()));
        timed_out(sb.remove_file("page.tsx").await);
        let restore = FileMap::from([("page.tsx".to_owned(), "x".to_owned())]);
        timed_out(
            h.provider
                .connect(Uuid::new_v4(), None, &restore)
                .await
                .map(|_| ()),
        );
    })
    .await
    .expect("every file operation ends with its timeout");
}

#[tokio::test]
async fn command_streams_stdout_and_stderr_with_cwd_and_env() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    sb.write_file("sub/marker.txt", "m").await.unwrap();
    let (mut sink, recorder) = recorder(usize::MAX);
    let mut spec = CommandSpec::new(
        "echo \"$GREETING\"; echo oops >&2; ls; printf 'é→'",
        Duration::from_secs(20),
    );
    spec.cwd = Some("sub".into());
    spec.env = vec![("GREETING".into(), "hi there".into())];
    let out = sb
        .run_command(spec, &mut sink, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout, "hi there\nmarker.txt\né→");
    assert_eq!(out.stderr, "oops\n");
    assert!(!out.truncated);
    let chunks = recorder.finish(sink).await;
    assert_eq!(joined(&chunks, true), out.stdout);
    assert_eq!(joined(&chunks, false), out.stderr);

    let start = h.fake.starts().pop().unwrap();
    assert_eq!(start.sandbox_id, sb.id());
    assert_eq!(start.cwd.as_deref(), Some("/home/user/app/sub"));
    assert_eq!(start.envs["GREETING"], "hi there");
    assert_eq!(start.timeout_ms, Some(20_000));
    h.assert_no_violations();
}

#[tokio::test]
async fn non_zero_exit_is_a_result_not_an_error() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let out = run(
        sb.as_ref(),
        CommandSpec::new("echo before; echo bad >&2; exit 3", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, "before\n");
    assert_eq!(out.stderr, "bad\n");
    h.assert_no_violations();
}

#[tokio::test]
async fn missing_cwd_is_not_found() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let mut spec = CommandSpec::new("true", Duration::from_secs(5));
    spec.cwd = Some("does/not/exist".into());
    let err = run(sb.as_ref(), spec).await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::NotFound(m) if m.contains("does not exist")),
        "{err}"
    );
    h.assert_no_violations();
}

#[tokio::test]
async fn command_timeout_uses_the_header_and_kills() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let started = Instant::now();
    let err = run(
        sb.as_ref(),
        CommandSpec::new("echo start; sleep 30", Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SandboxError::Timeout(d) if d == Duration::from_secs(1)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.fake.starts().pop().unwrap().timeout_ms, Some(1000));
    h.assert_no_violations();
}

#[tokio::test]
async fn client_deadline_kills_when_envd_does_not() {
    let h = Harness::new().await;
    h.fake.ignore_deadlines();
    let sb = h.sandbox().await;
    let started = Instant::now();
    let err = run(
        sb.as_ref(),
        CommandSpec::new("echo start; sleep 30", Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SandboxError::Timeout(_)), "{err}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
    let signals = h.fake.signals();
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(signals[0].signal, "SIGNAL_SIGKILL");
    h.assert_no_violations();
}

#[tokio::test]
async fn zero_timeout_falls_back_to_configured_command_timeout() {
    let h = Harness::with_config(|c| c.command_timeout = Duration::from_secs(7)).await;
    let sb = h.sandbox().await;
    run(sb.as_ref(), CommandSpec::new("true", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(h.fake.starts().pop().unwrap().timeout_ms, Some(7000));
    h.assert_no_violations();
}

#[tokio::test]
async fn cancellation_sends_sigkill_and_returns_promptly() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let cancel = CancellationToken::new();
    let (mut sink, recorder) = recorder(usize::MAX);
    let c = cancel.clone();
    let waiter = async {
        // Cancel once the command has produced output (so it surely started); give up after
        // 10 s so a failing command cannot hang the test.
        for _ in 0..500 {
            if !recorder.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.cancel();
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(
        sb.run_command(
            CommandSpec::new("echo up; sleep 30", Duration::from_secs(60)),
            &mut sink,
            cancel.clone()
        ),
        waiter
    );
    assert!(matches!(result, Err(SandboxError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let signals = h.fake.signals();
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(signals[0].signal, "SIGNAL_SIGKILL");
    assert_eq!(signals[0].sandbox_id, sb.id());
    assert!(signals[0].pid > 0);
    h.assert_no_violations();
}

#[tokio::test]
async fn cancellation_before_the_start_event_still_kills() {
    let h = Harness::new().await;
    h.fake.delay_start(Duration::from_millis(400));
    let sb = h.sandbox().await;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.cancel();
    });
    let result = run_with(
        sb.as_ref(),
        CommandSpec::new("sleep 30", Duration::from_secs(60)),
        cancel,
    )
    .await;
    assert!(matches!(result, Err(SandboxError::Cancelled)), "{result:?}");
    let signals = h.fake.signals();
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(signals[0].signal, "SIGNAL_SIGKILL");
    h.assert_no_violations();
}

#[tokio::test]
async fn a_stream_cut_before_the_end_is_unavailable() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    h.fake.cut_streams();
    let err = run(
        sb.as_ref(),
        CommandSpec::new("echo hi", Duration::from_secs(10)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("end")),
        "{err:?}"
    );
    h.assert_no_violations();
}

#[tokio::test]
async fn output_is_capped_for_the_model_but_streamed_in_full() {
    let h = Harness::with_config(|c| c.output_cap_bytes = 200).await;
    let sb = h.sandbox().await;
    let (mut sink, recorder) = recorder(usize::MAX);
    let out = sb
        .run_command(
            CommandSpec::new("seq 1 5000", Duration::from_secs(20)),
            &mut sink,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let full: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    assert_eq!(joined(&recorder.finish(sink).await, true), full);
    assert!(out.truncated);
    assert!(out.stdout.len() < 300, "{}", out.stdout.len());
    assert!(out.stdout.starts_with("1\n2\n3\n"));
    assert!(out.stdout.ends_with("4999\n5000\n"));
    assert!(out.stdout.contains("bytes omitted"));
    h.assert_no_violations();
}

#[tokio::test]
async fn streaming_stops_at_the_sink_limit_and_counts_the_rest() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let (mut sink, recorder) = recorder(100_000);
    let out = sb
        .run_command(
            CommandSpec::new(
                "yes | head -c 3000000; echo oops >&2",
                Duration::from_secs(60),
            ),
            &mut sink,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let omitted = sink.omitted_bytes();
    let chunks = recorder.finish(sink).await;
    let streamed = joined(&chunks, true);
    assert_eq!(streamed.len(), 100_000);
    assert_eq!(streamed, "y\n".repeat(50_000));
    assert_eq!(joined(&chunks, false), "", "stderr came after the limit");
    assert_eq!(omitted, 3_000_000 + 5 - 100_000);
    // The model still gets the head and tail of both streams.
    assert!(out.truncated);
    assert!(out.stdout.starts_with("y\ny\n") && out.stdout.ends_with("y\ny\n"));
    assert_eq!(out.stderr, "oops\n");
    h.assert_no_violations();
}

#[tokio::test]
async fn wrong_api_key_is_unavailable_with_a_clear_message() {
    let h = Harness::with_config(|c| c.api_key = "e2b_deadbeef".into()).await;
    let err = h.connect(None).await.err().unwrap();
    match err {
        SandboxError::Unavailable(m) => {
            assert!(m.contains("401") && m.contains("E2B_API_KEY"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.fake.creates(), 0);
    // Also on reconnect: a 401 must not be mistaken for "gone, create a new one".
    let err = h.connect(Some("iabc")).await.err().unwrap();
    assert!(matches!(err, SandboxError::Unavailable(_)), "{err:?}");
    assert!(E2bSandboxProvider::new(E2bConfig::new("")).is_err());
}

#[tokio::test]
async fn unknown_template_is_unavailable() {
    let h = Harness::with_config(|c| c.template = "nope".into()).await;
    let err = h.connect(None).await.err().unwrap();
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("nope")),
        "{err:?}"
    );
}

#[tokio::test]
async fn create_is_retried_on_503() {
    let h = Harness::new().await;
    h.fake.fail_next_creates(2);
    let sb = h.sandbox().await;
    assert!(h.fake.is_alive(sb.id()));
    assert_eq!(h.fake.creates(), 1);

    h.fake.fail_next_creates(10);
    let err = h.connect(None).await.err().unwrap();
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("503")),
        "{err:?}"
    );
}

#[tokio::test]
async fn extend_lifetime_sets_the_timeout() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    sb.extend_lifetime(Duration::from_secs(1200)).await.unwrap();
    assert_eq!(h.fake.timeout_secs(sb.id()), 1200);
    h.assert_no_violations();
}

#[tokio::test]
async fn preview_url_uses_the_running_dev_server_or_restarts_it() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    let url = sb.preview_url().await.unwrap();
    assert_eq!(url, format!("https://3000-{}.e2b.app", sb.id()));
    assert_eq!(h.fake.dev_server_starts(sb.id()), 0);

    h.fake.stop_dev_server(sb.id());
    assert_eq!(sb.preview_url().await.unwrap(), url);
    assert_eq!(h.fake.dev_server_starts(sb.id()), 1);
    let background = h
        .fake
        .starts()
        .into_iter()
        .find(|s| s.tag.as_deref() == Some(DEV_SERVER_TAG))
        .unwrap();
    assert_eq!(background.command, "/compile_page.sh");
    assert_eq!(
        background.timeout_ms, None,
        "a background server must not get a deadline"
    );
    h.assert_no_violations();
}

#[tokio::test]
async fn kill_deletes_and_is_idempotent() {
    let h = Harness::new().await;
    let sb = h.sandbox().await;
    sb.kill().await.unwrap();
    assert!(!h.fake.is_alive(sb.id()));
    sb.kill().await.unwrap();
    // envd of a dead sandbox answers 502 through the proxy.
    let err = sb.read_file("package.json").await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("502")),
        "{err:?}"
    );
    let err = run(
        sb.as_ref(),
        CommandSpec::new("true", Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SandboxError::Unavailable(_)), "{err:?}");
    h.assert_no_violations();
}

#[tokio::test]
async fn destroy_removes_a_deleted_projects_sandbox() {
    let h = Harness::new().await;
    let project_id = Uuid::new_v4();
    let sandbox = h
        .provider
        .connect(project_id, None, &FileMap::new())
        .await
        .unwrap();
    let id = sandbox.id().to_owned();
    assert!(h.fake.is_alive(&id));
    h.provider.destroy(project_id, &id).await.unwrap();
    assert!(!h.fake.is_alive(&id));
    // Already gone is fine.
    h.provider.destroy(project_id, &id).await.unwrap();
    assert!(h.fake.violations().is_empty(), "{:?}", h.fake.violations());
}
