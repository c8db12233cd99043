//! Running a command to completion: its output streamed to a sink and kept capped, its whole
//! process group killed on timeout, on cancellation, once it exits, or when dropped. While the
//! sink holds output that waits for room, the pipes are not read: the command blocks on them.

use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::sandbox::output::{command_output, OutputStream};
use crate::sandbox::{CommandOutput, OutputChunk, OutputSink, SandboxError};

use super::unavailable;

pub(super) fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        // ESRCH (already gone) is fine.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Kills the process group when dropped, so an abandoned `run_command` future leaves nothing.
pub(super) struct GroupGuard(pub(super) Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Runs `command` (stdout and stderr piped, own process group) to completion. On timeout or
/// cancellation the whole group is killed. Once the shell exits, what it left running in its
/// group is killed too, and the pipes are drained.
pub(super) async fn run_capped(
    mut command: Command,
    timeout: Duration,
    cap: usize,
    sink: &mut OutputSink,
    cancel: CancellationToken,
) -> Result<CommandOutput, SandboxError> {
    let mut child = command.spawn()?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let _guard = GroupGuard(pgid);
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| unavailable("no stdout pipe"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| unavailable("no stderr pipe"))?;
    let mut out = OutputStream::new(cap, OutputChunk::Stdout);
    let mut err = OutputStream::new(cap, OutputChunk::Stderr);
    let mut out_buf = vec![0u8; 8192];
    let mut err_buf = vec![0u8; 8192];
    let mut status = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // After the shell exits, pipes still held by an escaped process get this long to close.
    let drain = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(drain);

    while status.is_none() || !out.done || !err.done || sink.is_backlogged() {
        let reading = !sink.is_backlogged();
        tokio::select! {
            read = stdout.read(&mut out_buf), if reading && !out.done => match read {
                Ok(0) | Err(_) => out.close(sink),
                Ok(n) => out.feed(&out_buf[..n], sink),
            },
            read = stderr.read(&mut err_buf), if reading && !err.done => match read {
                Ok(0) | Err(_) => err.close(sink),
                Ok(n) => err.feed(&err_buf[..n], sink),
            },
            () = sink.deliver(), if !reading => {},
            exit = child.wait(), if status.is_none() => {
                status = Some(exit?);
                kill_group(pgid);
                drain.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(2));
            },
            () = &mut deadline, if status.is_none() => {
                kill_group(pgid);
                let _ = child.wait().await;
                return Err(SandboxError::Timeout(timeout));
            },
            () = cancel.cancelled(), if status.is_none() => {
                kill_group(pgid);
                let _ = child.wait().await;
                return Err(SandboxError::Cancelled);
            },
            () = &mut drain, if status.is_some() && reading => break,
        }
    }
    let status = status.ok_or_else(|| unavailable("command status missing"))?;
    let exit_code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Ok(command_output(exit_code, out, err))
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use tokio::sync::mpsc;

    use super::*;

    /// Exactly the sink's limit streams, the rest is only counted; the model keeps head and tail.
    #[tokio::test]
    async fn output_past_the_limit_is_only_counted() {
        const LIMIT: usize = 64 * 1024;
        let mut command = Command::new("sh");
        command
            .args(["-c", "yes | head -c 20000000; echo done >&2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let (sender, mut receiver) = mpsc::channel(1);
        let mut sink = OutputSink::new(sender, LIMIT);
        // The sink is dropped with the command, which ends the stream.
        let command = async move {
            let timeout = Duration::from_secs(120);
            let output = run_capped(command, timeout, 1000, &mut sink, CancellationToken::new());
            (output.await, sink.omitted_bytes())
        };
        let stream = async {
            let mut streamed = Vec::new();
            while let Some(chunk) = receiver.recv().await {
                streamed.push(chunk);
            }
            streamed
        };
        let ((output, omitted), streamed) = tokio::join!(command, stream);
        let output = output.unwrap();
        let stdout: String = streamed
            .iter()
            .map(|chunk| match chunk {
                OutputChunk::Stdout(text) => text.as_str(),
                OutputChunk::Stderr(text) => panic!("stderr came after the limit: {text}"),
            })
            .collect();
        assert_eq!(stdout, "y\n".repeat(LIMIT / 2));
        assert_eq!(omitted, (20_000_000 + "done\n".len() - LIMIT) as u64);
        assert_eq!(output.exit_code, 0);
        assert!(output.truncated);
        assert!(output.stdout.starts_with("y\ny\n") && output.stdout.ends_with("y\ny\n"));
        assert_eq!(output.stderr, "done\n");
    }
}
