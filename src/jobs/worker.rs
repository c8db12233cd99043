//! The worker pool: each worker claims a run, executes the agent under a heartbeated lease and
//! stores the outcome. A run is cancelled (on whichever process runs it) through the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::queue;
use crate::agent::runner::{settings_from_config, AgentContext, AgentError, RunProgress, RunUsage};
use crate::app::AppState;
use crate::entity::run;
use crate::events::{BusMessage, Emitter, StopReason};
use crate::services::credits;
use crate::services::run_outcome::Failure;

/// Without a wake-up (a lost notification, an expired lease) workers still look this often.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Cancellation tokens of the runs this process is executing.
type Running = Arc<Mutex<HashMap<Uuid, CancellationToken>>>;

pub fn start_workers(state: AppState) {
    let running: Running = Arc::default();
    tokio::spawn(forward_cancellations(
        state.bus.subscribe(),
        running.clone(),
        state.shutdown.clone(),
    ));
    let process = Uuid::new_v4().simple().to_string();
    for index in 0..state.config.worker_concurrency {
        let worker_id = format!("{}-{index}", &process[..12]);
        tokio::spawn(worker_loop(state.clone(), worker_id, running.clone()));
    }
}

async fn forward_cancellations(
    mut messages: broadcast::Receiver<BusMessage>,
    running: Running,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = messages.recv() => message,
        };
        match message {
            Ok(BusMessage::CancelRun(run_id)) => {
                if let Some(token) = running.lock().expect("poisoned").get(&run_id) {
                    token.cancel();
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How long a claimed run stays this worker's without a heartbeat.
fn lease(state: &AppState) -> chrono::Duration {
    chrono::Duration::seconds(state.config.run_lease_secs.max(1) as i64)
}

async fn worker_loop(state: AppState, worker_id: String, running: Running) {
    let lease = lease(&state);
    let mut wakeups = state.bus.subscribe();
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        match queue::claim_next_run(&state.db, &worker_id, lease).await {
            Ok(Some(run)) => process_run(&state, &worker_id, lease, run, &running).await,
            Ok(None) => {
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    woke = crate::events::wait_for_work(&mut wakeups) => {
                        if !woke {
                            // No bus: polling alone finds queued runs.
                            tokio::time::sleep(POLL_INTERVAL).await;
                        }
                    }
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "could not claim a run");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }
}

#[tracing::instrument(skip_all, fields(run_id = %run.id, project_id = %run.project_id, attempt = run.attempts))]
async fn process_run(
    state: &AppState,
    worker_id: &str,
    lease: chrono::Duration,
    run: run::Model,
    running: &Running,
) {
    if run.attempts > run.max_attempts {
        let failure = Failure {
            error: format!("the run was interrupted {} times", run.max_attempts),
            system_failure: true,
            reason: StopReason::Error,
            draft: None,
        };
        if let Err(err) = queue::fail_run(
            &state.db,
            state.bus.as_ref(),
            &run,
            worker_id,
            failure,
            RunUsage::default(),
        )
        .await
        {
            tracing::error!(%err, "could not fail an abandoned run");
        }
        return;
    }
    let cancel = state.shutdown.child_token();
    running
        .lock()
        .expect("poisoned")
        .insert(run.id, cancel.clone());
    let heartbeat = tokio::spawn(keep_lease(
        state.clone(),
        run.id,
        worker_id.to_owned(),
        lease,
        cancel.clone(),
    ));

    let emitter = Emitter::start(state.db.clone(), state.bus.clone(), run.project_id, run.id);
    let settings = settings_from_config(&state.config);
    let mut progress = RunProgress::default();
    let spend_cap = state.config.user_max_spend_usd_per_window;
    let outcome = match credits::project_spend_left(&state.db, run.project_id, spend_cap).await {
        Ok(spend_left_usd) => {
            let context = AgentContext {
                db: &state.db,
                models: state.models.as_ref(),
                sandboxes: &state.sandboxes,
                emitter: &emitter,
                settings: &settings,
                cancel: &cancel,
                spend_left_usd,
            };
            let max_run_time = Duration::from_secs(state.config.agent_max_run_secs);
            tokio::time::timeout(
                time_left(&run, max_run_time),
                context.execute(&run, &mut progress),
            )
            .await
            .unwrap_or(Err(AgentError::TimeLimit(max_run_time)))
        }
        Err(err) => Err(err.into()),
    };
    emitter.flush().await;
    heartbeat.abort();
    running.lock().expect("poisoned").remove(&run.id);

    let usage = progress.usage;
    let stored = match outcome {
        Ok(output) => {
            queue::succeed_run(
                &state.db,
                state.bus.as_ref(),
                &run,
                worker_id,
                output,
                usage,
            )
            .await
        }
        // Cancelled by the user (the run is already CANCELLED): what it wrote is kept as a
        // draft. By shutdown or a lost lease, another worker takes the run over: nothing to
        // store.
        Err(AgentError::Cancelled)
        | Err(AgentError::Sandbox(crate::sandbox::SandboxError::Cancelled)) => {
            if let Err(err) = queue::save_usage(&state.db, run.id, worker_id, usage).await {
                tracing::warn!(%err, "could not save the run's usage");
            }
            match progress.draft() {
                Some(draft) if !state.shutdown.is_cancelled() => {
                    queue::keep_cancelled_draft(&state.db, state.bus.as_ref(), &run, draft).await
                }
                _ => Ok(false),
            }
        }
        Err(err) => {
            // The detail stays here, in the run's span; the run keeps the public message.
            tracing::warn!(%err, "run failed");
            let failure = Failure {
                error: err.public_message(),
                system_failure: err.is_system_failure(),
                reason: err.stop_reason(),
                draft: progress.draft(),
            };
            queue::fail_run(
                &state.db,
                state.bus.as_ref(),
                &run,
                worker_id,
                failure,
                usage,
            )
            .await
        }
    };
    // Whatever became of the run, what it spent counts against its owner's cap.
    if let Err(err) = credits::add_project_spend(&state.db, run.project_id, usage.cost_usd).await {
        tracing::error!(%err, "could not add the run's spend");
    }
    match stored {
        Ok(true) => {}
        Ok(false) => tracing::info!("run ended elsewhere (cancelled or taken over)"),
        Err(err) => tracing::error!(%err, "could not store the run's outcome"),
    }
}

/// The run's wall-clock budget counts from its first claim, so a run taken over after a crash
/// does not start its clock again.
fn time_left(run: &run::Model, max_run_time: Duration) -> Duration {
    let started = run.started_at.unwrap_or_else(chrono::Utc::now);
    let elapsed = (chrono::Utc::now() - started).to_std().unwrap_or_default();
    max_run_time.saturating_sub(elapsed)
}

/// Heartbeats the lease; stops the run if it is no longer ours (cancelled on another process).
async fn keep_lease(
    state: AppState,
    run_id: Uuid,
    worker_id: String,
    lease: chrono::Duration,
    cancel: CancellationToken,
) {
    let every = (lease / 3).to_std().unwrap_or(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match queue::heartbeat(&state.db, run_id, &worker_id, lease).await {
            Ok(true) => {}
            Ok(false) => {
                cancel.cancel();
                return;
            }
            Err(err) => tracing::warn!(%err, "heartbeat failed"),
        }
    }
}
