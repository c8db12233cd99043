//! A bench's server: this same executable started with `--serve …` as a process of its own (so
//! that its memory is its own), which prints what it has to say and then the address it listens on.

use std::ffi::OsStr;
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Runs `serve` when this executable was started as the server (`--serve` first), else `bench`.
pub fn main_with<S, B>(serve: S, bench: B) -> anyhow::Result<()>
where
    S: std::future::Future<Output = anyhow::Result<()>>,
    B: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new()?;
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        runtime.block_on(serve)
    } else {
        runtime.block_on(bench)
    }
}

pub struct ServerProcess {
    child: Child,
    pub addr: String,
    /// The lines it printed before its address.
    #[allow(
        dead_code,
        reason = "each bench compiles this module and uses what it needs"
    )]
    pub printed: Vec<String>,
}

impl ServerProcess {
    /// Starts `<this executable> --serve <args…>`. `BENCH_SERVER_WRAPPER` (e.g. `heaptrack`)
    /// runs it under a profiler.
    pub async fn start<I, A>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let mut command = match std::env::var_os("BENCH_SERVER_WRAPPER") {
            Some(wrapper) => {
                let mut command = Command::new(wrapper);
                command.arg(std::env::current_exe()?);
                command
            }
            None => Command::new(std::env::current_exe()?),
        };
        command
            .arg("--serve")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let addr = loop {
            let line = lines
                .next_line()
                .await?
                .context("the server stopped before it listened")?;
            if line.parse::<std::net::SocketAddr>().is_ok() {
                break line;
            }
            printed.push(line);
        };
        Ok(Self {
            child,
            addr,
            printed,
        })
    }

    /// Resident and peak resident memory, in MiB.
    #[allow(
        dead_code,
        reason = "each bench compiles this module and uses what it needs"
    )]
    pub fn memory_mib(&self) -> anyhow::Result<(f64, f64)> {
        let pid = self.child.id().context("server pid")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|line| line.starts_with(name))
                .with_context(|| format!("{name} in /proc/{pid}/status"))?;
            let kib: f64 = line
                .split_whitespace()
                .nth(1)
                .context("a number")?
                .parse()?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}
