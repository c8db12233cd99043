//! A real PostgreSQL for the tests: `TEST_DATABASE_URL` when given, otherwise a throwaway
//! cluster started once per test binary from Debian's `postgresql` package (as the `postgres`
//! user when we are root, since PostgreSQL refuses to run as root). Each test gets its own
//! fresh database.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use uuid::Uuid;

static SERVER_URL: OnceLock<String> = OnceLock::new();

/// A URL of a new, empty database.
pub async fn fresh_database_url() -> String {
    let server = SERVER_URL.get_or_init(start_or_reuse).clone();
    let admin = Database::connect(format!("{server}/postgres"))
        .await
        .expect("connecting to the test PostgreSQL");
    let name = format!("codekraft_test_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database");
    admin.close().await.ok();
    format!("{server}/{name}")
}

/// Base URL without a database name.
fn start_or_reuse() -> String {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return url
            .trim_end_matches('/')
            .rsplit_once('/')
            .map(|(base, _)| base.to_owned())
            .unwrap_or(url);
    }
    let bin = find_bin_dir().expect(
        "PostgreSQL is not installed: install Debian's `postgresql` (the README's test command does) or set TEST_DATABASE_URL",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("codekraft-pg-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir));
    }
    let data = dir.join("data");
    let pg = |tool: &str| -> Command {
        let path = bin.join(tool);
        if as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    };
    run(pg("initdb")
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&data));
    // The cluster stops itself when this test process is gone.
    let postgres = bin.join("postgres");
    let watchdog = format!(
        "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 >{dir}/log 2>&1 & pg=$!; \
         while [ -d /proc/{parent} ]; do sleep 1; done; kill -INT $pg",
        postgres = postgres.display(),
        data = data.display(),
        dir = dir.display(),
        parent = std::process::id(),
    );
    let mut launcher = if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "sh", "-c", &watchdog]);
        command
    } else {
        let mut command = Command::new("sh");
        command.args(["-c", &watchdog]);
        command
    };
    let mut launcher = launcher.spawn().expect("starting PostgreSQL");
    std::thread::spawn(move || launcher.wait());
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start; see {}/log",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Accepting TCP is not yet accepting logins; give it a moment to finish start-up.
    std::thread::sleep(Duration::from_millis(500));
    format!("postgres://postgres@127.0.0.1:{port}")
}

fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{:?} failed: {}",
        command,
        String::from_utf8_lossy(&output.stderr)
    );
}
