//! The local sandbox backend against the real template. The template's dependencies are
//! installed once into `target/sandbox-cache` (the first run needs the npm registry and takes
//! a minute; later runs reuse it). Workspaces live in temporary dirs under `target/`.
//! Commands run inside bubblewrap when it works here (both ways for the command tests);
//! `SANDBOX_TEST_NO_BWRAP=1` forces everything unjailed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codekraft::sandbox::local::{LocalSandboxConfig, LocalSandboxProvider, PreviewOrigin};
use codekraft::sandbox::{
    CommandOutput, CommandSpec, FileMap, OutputSink, Sandbox, SandboxError, SandboxProvider,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::output::{joined, recorder};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct TestEnv {
    _dir: tempfile::TempDir,
    config: LocalSandboxConfig,
}

fn test_env(use_bwrap: bool) -> TestEnv {
    let root = manifest_dir().join("target/sandbox-tests");
    std::fs::create_dir_all(&root).unwrap();
    let dir = tempfile::tempdir_in(root).unwrap();
    let mut config = LocalSandboxConfig::new(dir.path().join("data"), PreviewOrigin::localhost(9));
    config.template_dir = manifest_dir().join("sandbox-templates/next-js");
    config.cache_dir = manifest_dir().join("target/sandbox-cache");
    // `SANDBOX_TEST_NO_BWRAP=1` runs everything unjailed (as on a machine without bubblewrap).
    config.use_jail = use_bwrap && std::env::var_os("SANDBOX_TEST_NO_BWRAP").is_none();
    TestEnv { _dir: dir, config }
}

async fn connect(config: &LocalSandboxConfig) -> (LocalSandboxProvider, Arc<dyn Sandbox>) {
    let provider = LocalSandboxProvider::new(config.clone());
    let sandbox = new_sandbox(&provider).await;
    (provider, sandbox)
}

/// The sandbox of a new project.
async fn new_sandbox(provider: &LocalSandboxProvider) -> Arc<dyn Sandbox> {
    provider
        .connect(Uuid::new_v4(), None, &FileMap::new())
        .await
        .expect("connect")
}

/// Whether the jail works here; under `CI=true` it must.
fn jail_works() -> bool {
    let jailed = LocalSandboxProvider::new(test_env(true).config).is_jailed();
    assert!(
        jailed || std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: the sandbox jail must work here (root, bubblewrap, passt)"
    );
    jailed
}

/// Jailed and unjailed when the jail works here; unjailed only otherwise.
fn modes() -> Vec<bool> {
    if jail_works() {
        vec![true, false]
    } else {
        vec![false]
    }
}

async fn run(sandbox: &dyn Sandbox, command: &str) -> Result<CommandOutput, SandboxError> {
    sandbox
        .run_command(
            CommandSpec::new(command, Duration::from_secs(30)),
            &mut OutputSink::discard(),
            CancellationToken::new(),
        )
        .await
}

#[tokio::test]
async fn echo_exit_codes_cwd_and_env() {
    for jail in modes() {
        let env = test_env(jail);
        let (_provider, sandbox) = connect(&env.config).await;
        let (mut sink, recorder) = recorder(usize::MAX);
        let output = sandbox
            .run_command(
                CommandSpec::new("echo hello; echo oops >&2; exit 3", Duration::from_secs(10)),
                &mut sink,
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(output.exit_code, 3, "jail={jail}");
        assert_eq!(output.stdout, "hello\n");
        assert_eq!(output.stderr, "oops\n");
        assert!(!output.truncated);
        let chunks = recorder.finish(sink).await;
        assert_eq!(
            (joined(&chunks, true), joined(&chunks, false)),
            ("hello\n".into(), "oops\n".into())
        );

        let mut spec = CommandSpec::new("pwd; echo \"$GREETING\"", Duration::from_secs(10));
        spec.cwd = Some("app".into());
        spec.env.push(("GREETING".into(), "hi there".into()));
        sandbox.write_file("app/.keep", "").await.unwrap();
        let output = sandbox
            .run_command(spec, &mut OutputSink::discard(), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(output.exit_code, 0);
        assert!(
            output.stdout.ends_with("/app/app\nhi there\n"),
            "{output:?}"
        );

        let node = run(&*sandbox, "node -e 'console.log(1 + 1)'")
            .await
            .unwrap();
        assert_eq!((node.exit_code, node.stdout.as_str()), (0, "2\n"));
    }
}

#[tokio::test]
async fn failing_command_reports_exit_code_and_stderr() {
    let env = test_env(true);
    let (_provider, sandbox) = connect(&env.config).await;
    let output = run(&*sandbox, "no-such-command-xyz").await.unwrap();
    assert_eq!(output.exit_code, 127);
    assert!(output.stderr.contains("not found"), "{output:?}");
    let output = run(&*sandbox, "cat missing.txt").await.unwrap();
    assert_eq!(output.exit_code, 1);
    let mut spec = CommandSpec::new("true", Duration::from_secs(5));
    spec.cwd = Some("no/such/dir".into());
    assert!(matches!(
        sandbox
            .run_command(spec, &mut OutputSink::discard(), CancellationToken::new())
            .await,
        Err(SandboxError::NotFound(_))
    ));
}

/// Processes whose command line contains `marker`, seen from outside any jail.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("cargo") {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

async fn assert_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    for jail in modes() {
        let env = test_env(jail);
        let (_provider, sandbox) = connect(&env.config).await;
        let marker = format!("1000.{}", rand_digits());
        let command = format!("sleep {marker} & sh -c 'sleep {marker}' & sleep {marker}");
        let started = Instant::now();
        let result = sandbox
            .run_command(
                CommandSpec::new(command, Duration::from_millis(800)),
                &mut OutputSink::discard(),
                CancellationToken::new(),
            )
            .await;
        assert!(
            matches!(result, Err(SandboxError::Timeout(_))),
            "jail={jail}: {result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_gone(&marker).await;
    }
}

#[tokio::test]
async fn background_processes_do_not_outlive_their_command() {
    let env = test_env(true);
    let (_provider, sandbox) = connect(&env.config).await;
    let marker = format!("1000.{}", rand_digits());
    let output = run(&*sandbox, &format!("sleep {marker} & echo started"))
        .await
        .unwrap();
    assert_eq!(output.stdout, "started\n");
    assert_gone(&marker).await;
}

#[tokio::test]
async fn cancellation_kills_the_command() {
    let env = test_env(true);
    let (_provider, sandbox) = connect(&env.config).await;
    let marker = format!("1000.{}", rand_digits());
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let result = sandbox
        .run_command(
            CommandSpec::new(format!("sleep {marker}"), Duration::from_secs(60)),
            &mut OutputSink::discard(),
            cancel,
        )
        .await;
    assert!(matches!(result, Err(SandboxError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_gone(&marker).await;
}

#[tokio::test]
async fn a_killed_sandbox_stops_its_commands_and_starts_nothing_again() {
    let env = test_env(true);
    let (provider, sandbox) = connect(&env.config).await;
    let workspace = provider.workspace_dir(sandbox.id().parse().unwrap());
    let marker = format!("1000.{}", rand_digits());
    let running = {
        let sandbox = sandbox.clone();
        let command = format!("sleep {marker}");
        tokio::spawn(async move { run(&*sandbox, &command).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sandbox.kill().await.unwrap();
    let result = running.await.unwrap();
    assert!(matches!(result, Err(SandboxError::Cancelled)), "{result:?}");
    assert_gone(&marker).await;
    assert!(!workspace.exists());
    // The dead handle neither starts a dev server nor writes the workspace back.
    let preview = sandbox.preview_url().await;
    assert!(
        matches!(preview, Err(SandboxError::NotFound(_))),
        "{preview:?}"
    );
    let written = sandbox.write_file("app/late.txt", "late").await;
    assert!(
        matches!(written, Err(SandboxError::NotFound(_))),
        "{written:?}"
    );
    assert!(!workspace.exists());
    assert!(matches!(
        provider.sandbox(sandbox.id().parse().unwrap()).await,
        Err(SandboxError::NotFound(_))
    ));
}

#[tokio::test]
async fn output_is_capped_for_the_model_but_streamed_in_full() {
    let mut env = test_env(true);
    env.config.output_cap_bytes = 1000;
    let (_provider, sandbox) = connect(&env.config).await;
    let (mut sink, recorder) = recorder(usize::MAX);
    let output = sandbox
        .run_command(
            CommandSpec::new(
                "echo START; head -c 100000 /dev/zero | tr '\\0' a; echo; echo END",
                Duration::from_secs(10),
            ),
            &mut sink,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(output.truncated);
    assert!(output.stdout.len() < 1200, "{}", output.stdout.len());
    assert!(output.stdout.starts_with("START\naaa"));
    assert!(output.stdout.ends_with("aaa\nEND\n"));
    assert!(output.stdout.contains("bytes omitted"));
    let chunks = recorder.finish(sink).await;
    assert_eq!(joined(&chunks, true).len(), 6 + 100_000 + 1 + 4);
}

#[tokio::test]
async fn server_secrets_do_not_reach_commands() {
    // Server secrets in this process's environment (set only when absent, so other tests in
    // the binary that read them keep their values).
    let mut secrets = Vec::new();
    for (key, fake) in [
        ("AUTH_JWT_SECRET", "test-secret-value-123"),
        ("GEMINI_API_KEY", "test-gemini-key-456"),
    ] {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, fake);
        }
        secrets.push((key, std::env::var(key).unwrap_or_else(|_| fake.to_owned())));
    }
    for jail in modes() {
        let env = test_env(jail);
        let (provider, sandbox) = connect(&env.config).await;
        let output = run(&*sandbox, "env").await.unwrap();
        assert_eq!(output.exit_code, 0);
        assert!(
            !output.stdout.contains("AUTH_JWT_SECRET"),
            "{}",
            output.stdout
        );
        for (key, value) in &secrets {
            assert!(!output.stdout.contains(key), "{key} leaked");
            assert!(
                !output.stdout.contains(value.as_str()),
                "{key}'s value leaked"
            );
        }
        assert!(!output.stdout.contains("NODE_ENV"));
        let workspace = provider.workspace_dir(sandbox.id().parse().unwrap());
        assert!(
            output
                .stdout
                .contains(&format!("HOME={}/home", workspace.display())),
            "{}",
            output.stdout
        );
        if jail {
            // The data dir beside the workspace and the server's files are invisible.
            let data = env.config.data_dir.display().to_string();
            let listing = run(&*sandbox, &format!("ls -A {data}/sandboxes"))
                .await
                .unwrap();
            assert_eq!(listing.stdout, format!("{}\n", sandbox.id()), "{listing:?}");
            let server = run(&*sandbox, &format!("ls -A {}", env!("CARGO_MANIFEST_DIR")))
                .await
                .unwrap();
            assert_eq!(server.stdout, "target\n", "{server:?}");
        }
    }
}

#[tokio::test]
async fn jailed_commands_reach_the_registry_only_never_the_hosts_loopback() {
    use tokio::io::AsyncWriteExt;
    if !jail_works() {
        return;
    }
    // A service on the host's loopback, as PostgreSQL, the API or another preview would be.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.0 200 OK\r\n\r\nHOST-SECRET")
                .await;
        }
    });
    let env = test_env(true);
    let (_provider, sandbox) = connect(&env.config).await;
    let probes = format!(
        "curl -s -m 3 http://127.0.0.1:{port}/; echo \" direct=$?\"; \
         curl -s -m 3 http://localhost:{port}/; echo \" name=$?\"; \
         curl -s -m 3 --noproxy '' --proxytunnel --proxy \"$HTTPS_PROXY\" http://127.0.0.1:{port}/; echo \" tunnel=$?\"; \
         curl -s -m 3 --noproxy '' --proxytunnel --proxy \"$HTTPS_PROXY\" https://localhost:{port}/; echo \" tunnel-name=$?\"; \
         curl -s -m 10 -o /dev/null -w '%{{http_code}}' https://registry.npmjs.org/is-number; echo \" registry=$?\""
    );
    let output = run(&*sandbox, &probes).await.unwrap();
    assert!(!output.stdout.contains("HOST-SECRET"), "{output:?}");
    for refused in ["direct=", "name=", "tunnel=", "tunnel-name="] {
        assert!(
            !output.stdout.contains(&format!(" {refused}0")),
            "{refused} must fail: {output:?}"
        );
    }
    assert!(output.stdout.contains("200 registry=0"), "{output:?}");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn paths_outside_the_app_are_refused() {
    let env = test_env(true);
    let (_provider, sandbox) = connect(&env.config).await;
    let refused = |r: &Result<_, SandboxError>| matches!(r, Err(SandboxError::PathRefused(_)));
    assert!(refused(&sandbox.write_file("../escape.txt", "x").await));
    assert!(refused(&sandbox.write_file("/tmp/escape.txt", "x").await));
    assert!(refused(&sandbox.read_file("/etc/passwd").await.map(|_| ())));
    assert!(refused(
        &sandbox.read_file("app/../../home/x").await.map(|_| ())
    ));
    assert!(refused(&sandbox.list_files("..").await.map(|_| ())));

    // A symlink made by a command that leads outside the app root.
    let output = run(
        &*sandbox,
        "ln -s /etc etc-link && ln -s .. up && ln -s app inside",
    )
    .await
    .unwrap();
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert!(refused(
        &sandbox.read_file("etc-link/passwd").await.map(|_| ())
    ));
    assert!(refused(&sandbox.write_file("etc-link/evil", "x").await));
    assert!(refused(&sandbox.write_file("up/home/evil", "x").await));
    let mut spec = CommandSpec::new("true", Duration::from_secs(5));
    spec.cwd = Some("up".into());
    assert!(refused(
        &sandbox
            .run_command(spec, &mut OutputSink::discard(), CancellationToken::new())
            .await
            .map(|_| ())
    ));
    // Symlinks that stay inside are fine.
    sandbox.write_file("inside/page.tsx", "ok").await.unwrap();
    assert_eq!(sandbox.read_file("app/page.tsx").await.unwrap(), "ok");
}

/// A command swaps `app/d` between a real directory and a symlink to a host directory as fast
/// as it can, while the server reads, writes, lists, removes and restores through `d`: no
/// operation may ever reach the host directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_by_a_command_never_steers_file_operations() {
    const SECRET: &str = "HOST SECRET";
    let env = test_env(true);
    let outside = env._dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), SECRET).unwrap();
    std::fs::write(outside.join("host-marker"), "m").unwrap();
    let project = Uuid::new_v4();
    let provider = LocalSandboxProvider::new(env.config.clone());
    let sandbox = provider
        .connect(project, None, &FileMap::new())
        .await
        .unwrap();

    let script = format!(
        "while :; do rm -rf d; ln -s {outside} d; rm -rf d; mkdir d; echo inside > d/secret; done",
        outside = outside.display()
    );
    let stop = CancellationToken::new();
    let swapper = {
        let (sandbox, stop) = (sandbox.clone(), stop.clone());
        tokio::spawn(async move {
            sandbox
                .run_command(
                    CommandSpec::new(script, Duration::from_secs(600)),
                    &mut OutputSink::discard(),
                    stop,
                )
                .await
        })
    };

    // Both states seen: the swapper runs.
    let (mut saw_dir, mut saw_link) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(saw_dir && saw_link) {
        assert!(Instant::now() < deadline, "the swapper never swapped");
        match sandbox.read_file("d/secret").await {
            Ok(content) => {
                assert_ne!(content, SECRET);
                saw_dir |= content == "inside\n";
            }
            Err(SandboxError::PathRefused(_)) => saw_link = true,
            Err(_) => {}
        }
    }

    for round in 0..300 {
        if let Ok(content) = sandbox.read_file("d/secret").await {
            assert_ne!(content, SECRET, "round {round}");
        }
        assert!(sandbox.read_file("d/host-marker").await.is_err());
        let _ = sandbox.write_file("d/new", "x").await;
        let _ = sandbox.write_file("d/sub/new", "x").await;
        for dir in ["d", ""] {
            if let Ok(files) = sandbox.list_files(dir).await {
                assert!(
                    !files.iter().any(|f| f.contains("host-marker")),
                    "{files:?}"
                );
            }
        }
        let _ = sandbox.remove_file("d/secret").await;
        let _ = sandbox.remove_file("d/host-marker").await;
        if round % 15 == 0 {
            // Restoring into the workspace, as a restarted server does when it re-attaches.
            let restarted = LocalSandboxProvider::new(env.config.clone());
            let restore = FileMap::from([("d/restored".to_owned(), "r".to_owned())]);
            let _ = restarted
                .connect(project, Some(sandbox.id()), &restore)
                .await;
        }
    }
    stop.cancel();
    let _ = swapper.await.unwrap();

    let mut names: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["host-marker", "secret"]);
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("host-marker")).unwrap(),
        "m"
    );
}

/// What would block the server (a FIFO), is no file (a socket) or would fill its memory (a
/// sparse 1,000 MB file, as large as the jail lets a file be; a directory of more entries than
/// a listing takes) ends at once.
#[tokio::test]
async fn fifos_sockets_and_oversized_files_are_refused_at_once() {
    let env = test_env(true);
    let (_provider, sandbox) = connect(&env.config).await;
    let output = run(
        &*sandbox,
        "mkfifo fifo \
         && python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('socket')\" \
         && truncate -s 1000M sparse \
         && head -c 524289 /dev/zero > over \
         && mkdir many && cd many && seq 1 10001 | xargs touch",
    )
    .await
    .unwrap();
    assert_eq!(output.exit_code, 0, "{output:?}");
    // The guard only keeps a hanging read from hanging the suite.
    tokio::time::timeout(Duration::from_secs(60), async {
        for (path, what) in [
            ("fifo", "FIFO"),
            ("socket", "socket"),
            ("many", "directory"),
        ] {
            match sandbox.read_file(path).await {
                Err(SandboxError::NotRegularFile(why)) => assert!(why.contains(what), "{why}"),
                other => panic!("{path}: expected NotRegularFile, got {other:?}"),
            }
        }
        for path in ["sparse", "over"] {
            match sandbox.read_file(path).await {
                Err(SandboxError::TooLarge(why)) => assert!(why.contains("524288"), "{why}"),
                other => panic!("{path}: expected TooLarge, got {other:?}"),
            }
        }
        for dir in ["many", ""] {
            match sandbox.list_files(dir).await {
                Err(SandboxError::TooLarge(why)) => assert!(why.contains("10000"), "{why}"),
                other => panic!("{dir:?}: expected TooLarge, got {other:?}"),
            }
        }
    })
    .await
    .expect("every refusal comes at once");
    // The same files are fine for commands.
    let output = run(&*sandbox, "rm many/1 && ls many | wc -l")
        .await
        .unwrap();
    assert_eq!(output.stdout, "10000\n");
    assert_eq!(sandbox.list_files("many").await.unwrap().len(), 10_000);
}

#[tokio::test]
async fn files_round_trip_and_listing() {
    let env = test_env(true);
    let (_provider, sandbox) = connect(&env.config).await;
    let template_page = sandbox.read_file("app/page.tsx").await.unwrap();
    assert!(template_page.contains("export default function"));
    sandbox
        .write_file("components/todo/list.tsx", "export const x = 'ünïcode';\n")
        .await
        .unwrap();
    assert_eq!(
        sandbox
            .read_file("./components/todo/list.tsx")
            .await
            .unwrap(),
        "export const x = 'ünïcode';\n"
    );
    assert!(matches!(
        sandbox.read_file("nope.ts").await,
        Err(SandboxError::NotFound(_))
    ));
    let all = sandbox.list_files("").await.unwrap();
    for expected in [
        "app/page.tsx",
        "app/layout.tsx",
        "app/globals.css",
        "components.json",
        "components/ui/button.tsx",
        "components/todo/list.tsx",
        "lib/utils.ts",
        "package.json",
        "package-lock.json",
        "next.config.ts",
    ] {
        assert!(
            all.contains(&expected.to_owned()),
            "{expected} missing: {all:?}"
        );
    }
    assert!(!all
        .iter()
        .any(|f| f.starts_with("node_modules/") || f.starts_with(".next/")));
    assert!(!all.iter().any(|f| f.starts_with("e2b")));
    assert_eq!(
        sandbox.list_files("components/todo").await.unwrap(),
        ["components/todo/list.tsx"]
    );
    // Commands see what the file API wrote, and the other way round.
    let output = run(
        &*sandbox,
        "cat components/todo/list.tsx && echo made > made.txt",
    )
    .await
    .unwrap();
    assert!(output.stdout.contains("ünïcode"));
    assert_eq!(sandbox.read_file("made.txt").await.unwrap(), "made\n");

    sandbox.remove_file("made.txt").await.unwrap();
    assert!(matches!(
        sandbox.read_file("made.txt").await,
        Err(SandboxError::NotFound(_))
    ));
    sandbox.remove_file("made.txt").await.unwrap();
    assert!(matches!(
        sandbox.remove_file("../outside").await,
        Err(SandboxError::PathRefused(_))
    ));
}

#[tokio::test]
async fn node_modules_are_shared_by_hard_links_but_changes_stay_local() {
    use std::os::unix::fs::MetadataExt;
    let env = test_env(true);
    let provider = LocalSandboxProvider::new(env.config.clone());
    let a = new_sandbox(&provider).await;
    let b = new_sandbox(&provider).await;
    let file = "node_modules/clsx/package.json";
    let dir_a = provider.workspace_dir(a.id().parse().unwrap()).join("app");
    let dir_b = provider.workspace_dir(b.id().parse().unwrap()).join("app");
    let ino_a = std::fs::metadata(dir_a.join(file)).unwrap().ino();
    let ino_b = std::fs::metadata(dir_b.join(file)).unwrap().ino();
    assert_eq!(
        ino_a, ino_b,
        "node_modules should be hard links to the cache"
    );

    // A project's own changes to node_modules stay in its workspace.
    let output = run(&*a, "rm -rf node_modules/clsx && mkdir node_modules/left-pad-local && echo 1 > node_modules/left-pad-local/index.js")
        .await
        .unwrap();
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert!(dir_b.join(file).exists());
    assert!(!dir_b.join("node_modules/left-pad-local").exists());
    let untouched = std::fs::read_to_string(dir_b.join(file)).unwrap();
    assert!(untouched.contains("\"name\": \"clsx\""));

    // `npm install x` (npm registry) adds to this workspace only.
    let output = b
        .run_command(
            CommandSpec::new("npm install is-number@7.0.0", Duration::from_secs(180)),
            &mut OutputSink::discard(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert!(dir_b.join("node_modules/is-number/package.json").exists());
    assert!(b
        .read_file("package.json")
        .await
        .unwrap()
        .contains("is-number"));
    assert!(!dir_a.join("node_modules/is-number").exists());
    let cache = env.config.cache_dir.clone();
    for entry in std::fs::read_dir(cache).unwrap().flatten() {
        assert!(!entry.path().join("node_modules/is-number").exists());
    }
    let c = new_sandbox(&provider).await;
    assert!(!c
        .read_file("package.json")
        .await
        .unwrap()
        .contains("is-number"));
    let node = run(
        &*b,
        "node -e \"console.log(require('is-number')(5), require('clsx').clsx('a', false && 'b'))\"",
    )
    .await
    .unwrap();
    assert_eq!(node.stdout, "true a\n", "{node:?}");
}

#[tokio::test]
async fn a_jailed_project_cannot_change_the_shared_dependencies() {
    use std::os::unix::fs::MetadataExt;
    if !jail_works() {
        return;
    }
    let env = test_env(true);
    let provider = LocalSandboxProvider::new(env.config.clone());
    let attacker = new_sandbox(&provider).await;
    let victim = new_sandbox(&provider).await;
    let tsc = "node_modules/typescript/lib/tsc.js";
    let victim_tsc = provider
        .workspace_dir(victim.id().parse().unwrap())
        .join("app")
        .join(tsc);
    let before = std::fs::read(&victim_tsc).unwrap();
    let attempts = [
        format!("chmod u+w {tsc}; echo 'process.exit(0)' >> {tsc}"),
        format!("chmod 777 {tsc}; printf hacked > {tsc}"),
        format!("chown 1000 {tsc}; truncate -s 0 {tsc}"),
        format!("python3 -c \"open('{tsc}', 'r+b').write(b'hacked')\""),
    ];
    for attempt in &attempts {
        let output = run(&*attacker, attempt).await.unwrap();
        assert_ne!(output.exit_code, 0, "{attempt}: {output:?}");
    }
    // The attacker may replace its own copy (a new inode), which changes nothing elsewhere.
    let own = run(
        &*attacker,
        &format!("rm -f {tsc} && echo mine > {tsc} && cat {tsc}"),
    )
    .await
    .unwrap();
    assert_eq!(own.stdout, "mine\n", "{own:?}");

    assert_eq!(
        std::fs::read(&victim_tsc).unwrap(),
        before,
        "the victim's tsc changed"
    );
    for entry in std::fs::read_dir(&env.config.cache_dir).unwrap().flatten() {
        let cached = entry.path().join(tsc);
        if cached.exists() {
            assert_eq!(std::fs::read(&cached).unwrap(), before, "the cache changed");
            let meta = std::fs::metadata(&cached).unwrap();
            assert_eq!(
                meta.uid(),
                nix::unistd::geteuid().as_raw(),
                "cache owned by the server"
            );
            assert_eq!(meta.mode() & 0o222, 0, "cache files are read-only");
        }
    }
    // No file the sandbox user owns is shared with another workspace or the cache.
    let victim_uid = provider.sandbox_uid(victim.id().parse().unwrap()).unwrap();
    let shared = std::fs::metadata(&victim_tsc).unwrap();
    assert!(shared.nlink() > 1 && shared.uid() != victim_uid);
    let check = run(&*victim, &format!("node {tsc} --version"))
        .await
        .unwrap();
    assert!(check.stdout.starts_with("Version "), "{check:?}");
}

#[tokio::test]
async fn a_fork_bomb_and_a_memory_hog_end_as_tool_errors_and_others_keep_working() {
    if !jail_works() {
        return;
    }
    let mut env = test_env(true);
    env.config.limits.max_processes = 64;
    env.config.limits.max_memory_bytes = 256 << 20;
    env.config.limits.max_sandbox_memory_bytes = 512 << 20;
    let provider = LocalSandboxProvider::new(env.config.clone());
    let bomber = new_sandbox(&provider).await;
    let neighbour = new_sandbox(&provider).await;

    let hog = run(
        &*bomber,
        "python3 -c 'x = bytearray(1 << 30); print(len(x))'",
    )
    .await
    .unwrap();
    assert_ne!(hog.exit_code, 0, "{hog:?}");
    assert!(hog.stderr.contains("MemoryError"), "{hog:?}");

    let mut discard = OutputSink::discard();
    let bomb = bomber.run_command(
        CommandSpec::new(
            "bomb() { bomb | bomb & }; bomb; sleep 30",
            Duration::from_secs(4),
        ),
        &mut discard,
        CancellationToken::new(),
    );
    let during = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        run(&*neighbour, "echo alive; (true & true & wait); echo forked").await
    };
    let (bomb, during) = tokio::join!(bomb, during);
    assert!(matches!(bomb, Err(SandboxError::Timeout(_))), "{bomb:?}");
    let during = during.unwrap();
    assert_eq!(during.stdout, "alive\nforked\n", "{during:?}");
    if provider.has_cgroups() {
        // Many processes, each under the per-process limit, together over the sandbox's.
        let many = run(
            &*bomber,
            "for i in 1 2 3 4 5 6; do python3 -c 'import time; x = bytearray(200 << 20); time.sleep(3)' & done; \
             wait; echo waited",
        )
        .await
        .unwrap();
        assert!(many.stderr.contains("Killed"), "{many:?}");
    }
    // The bomb's sandbox works again once its command is gone.
    let after = run(&*bomber, "echo recovered").await.unwrap();
    assert_eq!(after.stdout, "recovered\n", "{after:?}");
}

#[tokio::test]
async fn workspaces_survive_restarts_and_are_rebuilt_from_restore() {
    let env = test_env(true);
    let project = Uuid::new_v4();
    let provider = LocalSandboxProvider::new(env.config.clone());
    let sandbox = provider
        .connect(project, None, &FileMap::new())
        .await
        .unwrap();
    let id = sandbox.id().to_owned();
    assert_eq!(id, project.to_string());
    sandbox.write_file("app/page.tsx", "v1").await.unwrap();
    drop(sandbox);
    drop(provider);

    // A new server process reconnects to the same directory.
    let provider = LocalSandboxProvider::new(env.config.clone());
    let sandbox = provider
        .connect(
            project,
            Some(&id),
            &FileMap::from([("other.txt".into(), "r".into())]),
        )
        .await
        .unwrap();
    assert_eq!(sandbox.read_file("app/page.tsx").await.unwrap(), "v1");

    // Killed (workspace deleted): a later connect rebuilds from template + restore.
    sandbox.kill().await.unwrap();
    assert!(!provider.workspace_dir(project).exists());
    assert!(matches!(
        sandbox.read_file("app/page.tsx").await,
        Err(SandboxError::NotFound(_))
    ));
    let restore = FileMap::from([("app/page.tsx".into(), "restored".into())]);
    let sandbox = provider
        .connect(project, Some(&id), &restore)
        .await
        .unwrap();
    assert_eq!(sandbox.read_file("app/page.tsx").await.unwrap(), "restored");
    assert!(sandbox.read_file("app/layout.tsx").await.is_ok());
    let bad = FileMap::from([("../../evil".into(), "x".into())]);
    assert!(matches!(
        provider.connect(Uuid::new_v4(), None, &bad).await,
        Err(SandboxError::PathRefused(_))
    ));
}

/// GET through the proxy until the body contains `needle` (hot reload may take a moment).
async fn wait_for_text(client: &reqwest::Client, url: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client.get(url).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        if status == 200 && body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not served at {url}: {status} {}",
            &body[..body.len().min(2000)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A client that reaches the `{id}.localhost` hosts of these sandboxes on loopback, as browsers
/// do (glibc does not resolve such names).
fn localhost_client(sandbox_ids: &[&str], follow_redirects: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy();
    for id in sandbox_ids {
        builder = builder.resolve(&format!("{id}.localhost"), ([127, 0, 0, 1], 0).into());
    }
    if !follow_redirects {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn preview_serves_the_app_through_the_proxy_and_hot_reloads() {
    let mut env = test_env(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let preview_addr = listener.local_addr().unwrap();
    env.config.preview_origin = PreviewOrigin::localhost(preview_addr.port());
    env.config.idle_timeout = Duration::from_secs(4);
    let provider = Arc::new(LocalSandboxProvider::new(env.config.clone()));
    let app = codekraft::http::preview::router(provider.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let project = Uuid::new_v4();
    let sandbox = provider
        .connect(project, None, &FileMap::new())
        .await
        .unwrap();
    sandbox
        .write_file(
            "app/page.tsx",
            "export default function Page() { return <h1 className=\"text-2xl\">Hello from CodeKraft v1</h1>; }\n",
        )
        .await
        .unwrap();
    let url = sandbox.preview_url().await.unwrap();
    let base = format!("http://{project}.localhost:{}", preview_addr.port());
    assert_eq!(url, format!("{base}/preview/{project}/"));

    let missing = Uuid::new_v4().to_string();
    let client = localhost_client(&[&project.to_string(), &missing], true);
    let html = wait_for_text(&client, &url, "Hello from CodeKraft v1").await;
    assert!(
        html.contains(&format!("/preview/{project}/_next/")),
        "assets under basePath"
    );
    // An asset through the proxy (CSS with Tailwind compiled in).
    let css_path = html
        .split('"')
        .find(|s| s.starts_with(&format!("/preview/{project}/_next/")) && s.contains(".css"))
        .unwrap_or_else(|| panic!("no stylesheet in {html}"))
        .to_owned();
    let css = client
        .get(format!("{base}{css_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(css.text().await.unwrap().contains("text-2xl"));
    // Method, query, headers and body are forwarded (a route handler echoes them).
    sandbox
        .write_file(
            "app/api/echo/route.ts",
            "export async function POST(request: Request) {\n  const url = new URL(request.url);\n  const body = await request.text();\n  return Response.json({ body, q: url.searchParams.get(\"q\"), h: request.headers.get(\"x-test\") }, { headers: { \"x-echo\": \"yes\" } });\n}\n",
        )
        .await
        .unwrap();
    // (A new route appears once the dev server's watcher has seen the file.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let echoed = loop {
        let response = client
            .post(format!("{url}api/echo?q=42"))
            .header("x-test", "header-value")
            .body("posted body")
            .send()
            .await
            .unwrap();
        if response.status() != 404 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.headers()["x-echo"], "yes");
    let echoed: serde_json::Value = echoed.json().await.unwrap();
    assert_eq!(
        echoed,
        serde_json::json!({ "body": "posted body", "q": "42", "h": "header-value" })
    );
    let missing = client
        .get(format!(
            "http://{missing}.localhost:{}/preview/{missing}/",
            preview_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The HMR websocket is tunnelled through the proxy, on the preview's origin.
    let ws_url = format!(
        "{}/preview/{project}/_next/hmr",
        base.replace("http://", "ws://")
    );
    let mut ws_request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    ws_request
        .headers_mut()
        .insert("origin", base.parse().unwrap());
    let stream = tokio::net::TcpStream::connect(preview_addr).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async(ws_request, stream)
        .await
        .expect("HMR websocket through the proxy");
    assert_eq!(response.status(), 101);
    let hmr_messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let collected = hmr_messages.clone();
    let hmr_reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(message)) = socket.next().await {
            if let Ok(text) = message.to_text() {
                collected.lock().unwrap().push(text.to_owned());
            }
        }
    });

    // Edit: the dev server picks up the change.
    sandbox
        .write_file(
            "app/page.tsx",
            "export default function Page() { return <h1>Hello from CodeKraft v2</h1>; }\n",
        )
        .await
        .unwrap();
    wait_for_text(&client, &url, "Hello from CodeKraft v2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while hmr_messages.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no HMR message over the proxied websocket"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Idle: once the preview tab is gone (an open HMR socket keeps the sandbox busy), the dev
    // server stops, and the next request starts it again.
    let local = provider.sandbox(project).await.unwrap();
    tokio::time::sleep(env.config.idle_timeout + Duration::from_secs(2)).await;
    assert!(
        local.has_dev_server().await,
        "an open preview must keep the dev server"
    );
    hmr_reader.abort();
    let deadline = Instant::now() + Duration::from_secs(20);
    while local.has_dev_server().await {
        assert!(Instant::now() < deadline, "idle dev server was not stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_text(&client, &url, "Hello from CodeKraft v2").await;
    provider.shutdown().await;
    assert!(!local.has_dev_server().await);
}

fn rand_digits() -> String {
    Uuid::new_v4().as_u128().to_string()[..9].to_owned()
}

/// Workspaces under `{data_dir}/sandboxes` that are still spares of the warm pool.
fn pooled_workspaces(config: &LocalSandboxConfig) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(config.data_dir.join("sandboxes")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.path().join(".pooled").exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn warm_pool_hands_a_running_preview_to_a_new_project_and_refills() {
    let mut env = test_env(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    env.config.preview_origin = PreviewOrigin::localhost(port);
    env.config.warm_pool = 1;
    // A spare left by an earlier process is nobody's: a new provider removes it.
    let leftover = env
        .config
        .data_dir
        .join("sandboxes")
        .join(Uuid::new_v4().to_string());
    std::fs::create_dir_all(leftover.join("app")).unwrap();
    std::fs::write(leftover.join(".pooled"), "").unwrap();
    let provider = Arc::new(LocalSandboxProvider::new(env.config.clone()));
    assert!(!leftover.exists(), "unclaimed spare of an earlier process");
    let app = codekraft::http::preview::router(provider.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    provider.warm_up().await.unwrap();
    provider.fill_pool().await.unwrap();
    assert_eq!(provider.pooled(), 1);
    let spares = pooled_workspaces(&env.config);
    assert_eq!(spares.len(), 1, "{spares:?}");
    let spare_id = spares[0].clone();
    let project = Uuid::new_v4();
    let preview_of = |id: &str| format!("http://{id}.localhost:{port}/preview/{id}/");
    let ids = [spare_id.as_str(), &project.to_string()];
    let client = localhost_client(&ids, true);
    let unclaimed = client.get(preview_of(&spare_id)).send().await.unwrap();
    assert_eq!(unclaimed.status(), 404, "a spare is nobody's preview yet");

    // A new project gets the spare: its dev server already runs, with the restore written.
    let restore = FileMap::from([("app/notes.txt".into(), "restored".into())]);
    // Two requests racing on the new project (a run and an open preview) get the same one.
    let (sandbox, racing) = tokio::join!(
        provider.connect(project, None, &restore),
        provider.connect(project, None, &restore)
    );
    let (sandbox, racing) = (sandbox.unwrap(), racing.unwrap());
    assert_eq!(sandbox.id(), spare_id);
    assert_eq!(racing.id(), spare_id);
    let local = provider.sandbox(spare_id.parse().unwrap()).await.unwrap();
    assert!(local.has_dev_server().await, "the spare's dev server runs");
    assert_eq!(
        sandbox.read_file("app/notes.txt").await.unwrap(),
        "restored"
    );
    let url = sandbox.preview_url().await.unwrap();
    assert_eq!(url, preview_of(&spare_id));
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);

    // The project's own preview origin leads there too.
    let by_project = localhost_client(&ids, false)
        .get(format!("{}_next/x?q=1", preview_of(&project.to_string())))
        .send()
        .await
        .unwrap();
    assert_eq!(by_project.status(), 307);
    assert_eq!(
        by_project.headers()["location"],
        format!("{}_next/x?q=1", preview_of(&spare_id)).as_str()
    );
    let followed = client
        .get(preview_of(&project.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);

    // It is the project's sandbox from now on, hot reload included.
    sandbox
        .write_file(
            "app/page.tsx",
            "export default function Page() { return <h1>Pooled and claimed</h1>; }\n",
        )
        .await
        .unwrap();
    wait_for_text(&client, &url, "Pooled and claimed").await;
    for stored in [None, Some(spare_id.as_str())] {
        let again = provider
            .connect(project, stored, &FileMap::new())
            .await
            .unwrap();
        assert_eq!(again.id(), spare_id, "reconnect with stored id {stored:?}");
    }

    // A replacement spare is started in the background.
    provider.fill_pool().await.unwrap();
    assert_eq!(provider.pooled(), 1);
    let refilled = pooled_workspaces(&env.config);
    assert_eq!(refilled.len(), 1);
    assert_ne!(refilled[0], spare_id);

    // Shutdown removes the spare; the claimed workspace stays for the next start.
    provider.shutdown().await;
    assert!(pooled_workspaces(&env.config).is_empty());
    assert!(provider
        .workspace_dir(spare_id.parse().unwrap())
        .join("app/app/page.tsx")
        .exists());
    assert!(!local.has_dev_server().await);

    // A restarted server still knows the project's sandbox, stored id or not.
    drop(provider);
    let provider = LocalSandboxProvider::new(env.config.clone());
    let again = provider
        .connect(project, None, &FileMap::new())
        .await
        .unwrap();
    assert_eq!(again.id(), spare_id);
    assert_eq!(provider.pooled(), 0);
}
