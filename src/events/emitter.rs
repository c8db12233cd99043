//! Publishes a run's events in order: they go through a bounded channel to one task that stores
//! each (with its sequence number) and wakes subscribers. A producer waits while the channel is
//! full, so however slowly the database answers, a run holds at most `CHANNEL_CAPACITY` events
//! in memory.
//!
//! Neighbouring text of one source (a tool call's stdout, its stderr, the model's text deltas)
//! becomes one event, so one row, one transaction and one wake-up: text that is already queued
//! always, text that comes later while the batch is younger than `BATCH_WINDOW`, until the batch
//! holds `BATCH_BYTES`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use super::{record_event, BusMessage, EventBus, OutputStream, RunEventData};
use crate::sandbox::OutputChunk;

const CHANNEL_CAPACITY: usize = 64;
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const BATCH_BYTES: usize = 8 * 1024;

/// Where streamed text comes from; text merges only with text of the same source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TextSource {
    ModelText,
    Stdout { call_id: String },
    Stderr { call_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Text {
    source: TextSource,
    text: String,
}

impl Text {
    fn into_event(self) -> RunEventData {
        let (call_id, stream) = match self.source {
            TextSource::ModelText => return RunEventData::ModelTextDelta { text: self.text },
            TextSource::Stdout { call_id } => (call_id, OutputStream::Stdout),
            TextSource::Stderr { call_id } => (call_id, OutputStream::Stderr),
        };
        RunEventData::ToolOutput {
            call_id,
            stream: Some(stream),
            text: self.text,
            truncated: false,
            omitted_bytes: 0,
        }
    }
}

enum Command {
    Event(RunEventData),
    Text(Text),
    Flush(oneshot::Sender<()>),
}

/// The text being gathered into one event.
#[derive(Debug)]
struct Batch {
    open: Option<Text>,
    /// When the open batch stops waiting for more.
    closes_at: Instant,
}

impl Batch {
    fn new() -> Self {
        Self {
            open: None,
            closes_at: Instant::now(),
        }
    }

    /// Adds `text` (arrived at `now`); returns the batch it closes (another source's), to be
    /// stored first.
    fn add(&mut self, text: Text, now: Instant) -> Option<Text> {
        match &mut self.open {
            Some(open) if open.source == text.source => {
                open.text.push_str(&text.text);
                None
            }
            _ => {
                self.closes_at = now + BATCH_WINDOW;
                self.open.replace(text)
            }
        }
    }

    fn is_open(&self) -> bool {
        self.open.is_some()
    }

    fn is_full(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|open| open.text.len() >= BATCH_BYTES)
    }

    fn take(&mut self) -> Option<Text> {
        self.open.take()
    }
}

/// Stores the events of one run.
struct Store {
    db: DatabaseConnection,
    bus: Arc<dyn EventBus>,
    project_id: Uuid,
    run_id: Uuid,
}

impl Store {
    async fn event(&self, data: RunEventData) {
        let (run_id, kind) = (self.run_id, data.kind());
        match record_event(&self.db, self.project_id, run_id, data).await {
            Ok(_) => {
                self.bus
                    .publish(BusMessage::ProjectEvents(self.project_id))
                    .await
            }
            Err(err) => tracing::warn!(%err, ?kind, %run_id, "could not store a run event"),
        }
    }

    async fn text(&self, text: Option<Text>) {
        if let Some(text) = text {
            self.event(text.into_event()).await;
        }
    }

    /// Until every sender is gone: stores events in order, merging neighbouring text.
    async fn run(self, mut receiver: mpsc::Receiver<Command>) {
        let mut batch = Batch::new();
        loop {
            let command = match receiver.try_recv() {
                Ok(command) => Some(command),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) if batch.is_open() => {
                    match tokio::time::timeout_at(batch.closes_at, receiver.recv()).await {
                        Ok(command) => command,
                        Err(_) => {
                            self.text(batch.take()).await;
                            continue;
                        }
                    }
                }
                Err(TryRecvError::Empty) => receiver.recv().await,
            };
            match command {
                Some(Command::Text(text)) => {
                    self.text(batch.add(text, Instant::now())).await;
                    if batch.is_full() {
                        self.text(batch.take()).await;
                    }
                }
                Some(Command::Event(data)) => {
                    self.text(batch.take()).await;
                    self.event(data).await;
                }
                Some(Command::Flush(done)) => {
                    self.text(batch.take()).await;
                    let _ = done.send(());
                }
                None => {
                    self.text(batch.take()).await;
                    return;
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct Emitter {
    sender: mpsc::Sender<Command>,
}

impl Emitter {
    pub fn start(
        db: DatabaseConnection,
        bus: Arc<dyn EventBus>,
        project_id: Uuid,
        run_id: Uuid,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let store = Store {
            db,
            bus,
            project_id,
            run_id,
        };
        tokio::spawn(store.run(receiver));
        Self { sender }
    }

    async fn send(&self, command: Command) {
        // The task only ends when every sender is gone, so this cannot fail while we hold one.
        let _ = self.sender.send(command).await;
    }

    pub async fn emit(&self, data: RunEventData) {
        self.send(Command::Event(data)).await;
    }

    /// Output of a tool call, merged with the neighbouring output of its stream.
    pub async fn emit_output(&self, call_id: &str, chunk: OutputChunk) {
        let call_id = call_id.to_owned();
        let (source, text) = match chunk {
            OutputChunk::Stdout(text) => (TextSource::Stdout { call_id }, text),
            OutputChunk::Stderr(text) => (TextSource::Stderr { call_id }, text),
        };
        self.send(Command::Text(Text { source, text })).await;
    }

    /// A tool call's output reached the streaming limit: this much of it was not streamed.
    pub async fn emit_output_omitted(&self, call_id: &str, omitted_bytes: u64) {
        self.emit(RunEventData::ToolOutput {
            call_id: call_id.to_owned(),
            stream: None,
            text: String::new(),
            truncated: true,
            omitted_bytes,
        })
        .await;
    }

    /// Model text, merged with the neighbouring deltas.
    pub async fn emit_text_delta(&self, text: String) {
        let source = TextSource::ModelText;
        self.send(Command::Text(Text { source, text })).await;
    }

    /// Waits until every event emitted so far is stored.
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        self.send(Command::Flush(done)).await;
        let _ = stored.await;
    }
}

/// Model text on its way from the provider's callback, which cannot wait, to the emitter, which
/// may make its caller wait: the callback appends here, and `forward` hands over all that has
/// gathered whenever the emitter takes more. While the database is slow, deltas merge here
/// instead of queueing; the relay holds at most the text of the response being streamed, which
/// the provider keeps whole anyway.
#[derive(Default)]
pub struct DeltaRelay {
    state: Mutex<RelayState>,
    ready: Notify,
}

#[derive(Default)]
struct RelayState {
    text: String,
    closed: bool,
}

impl DeltaRelay {
    fn state(&self) -> std::sync::MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, text: &str) {
        self.state().text.push_str(text);
        self.ready.notify_one();
    }

    /// No more text comes: `forward` returns once it has handed everything over.
    pub fn close(&self) {
        self.state().closed = true;
        self.ready.notify_one();
    }

    pub async fn forward(&self, emitter: &Emitter) {
        while let Some(text) = self.next().await {
            emitter.emit_text_delta(text).await;
        }
    }

    async fn next(&self) -> Option<String> {
        loop {
            {
                let mut state = self.state();
                if !state.text.is_empty() {
                    return Some(std::mem::take(&mut state.text));
                }
                if state.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a push in between is not missed.
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_RUN: crate::services::run::RunLimits = crate::services::run::RunLimits {
        max_active: 1,
        max_spend_usd_per_window: None,
    };

    fn stdout(call: &str, text: &str) -> Text {
        Text {
            source: TextSource::Stdout {
                call_id: call.into(),
            },
            text: text.into(),
        }
    }

    fn stderr(call: &str, text: &str) -> Text {
        Text {
            source: TextSource::Stderr {
                call_id: call.into(),
            },
            text: text.into(),
        }
    }

    fn delta(text: &str) -> Text {
        Text {
            source: TextSource::ModelText,
            text: text.into(),
        }
    }

    /// What a batch stores for `pieces`, flushed at the end.
    fn batched(pieces: Vec<Text>) -> Vec<Text> {
        let mut batch = Batch::new();
        let mut stored = Vec::new();
        for piece in pieces {
            stored.extend(batch.add(piece, Instant::now()));
            if batch.is_full() {
                stored.extend(batch.take());
            }
        }
        stored.extend(batch.take());
        stored
    }

    #[test]
    fn neighbouring_text_of_one_source_merges_in_order() {
        let stored = batched(vec![
            delta("Wri"),
            delta("ting "),
            delta("the page."),
            stdout("a", "1\n"),
            stdout("a", "2\n"),
            stderr("a", "warn\n"),
            stdout("a", "3\n"),
            stdout("b", "4\n"),
            delta("Done."),
        ]);
        assert_eq!(
            stored,
            [
                delta("Writing the page."),
                stdout("a", "1\n2\n"),
                stderr("a", "warn\n"),
                stdout("a", "3\n"),
                stdout("b", "4\n"),
                delta("Done."),
            ]
        );
    }

    #[test]
    fn a_batch_is_stored_once_it_holds_batch_bytes() {
        let line = "x".repeat(1000);
        let stored = batched((0..20).map(|_| stdout("a", &line)).collect());
        let sizes: Vec<usize> = stored.iter().map(|t| t.text.len()).collect();
        assert_eq!(sizes, [9000, 9000, 2000]);
    }

    #[test]
    fn tool_output_names_call_and_stream() {
        assert_eq!(
            stderr("c1", "oops").into_event(),
            RunEventData::ToolOutput {
                call_id: "c1".into(),
                stream: Some(OutputStream::Stderr),
                text: "oops".into(),
                truncated: false,
                omitted_bytes: 0,
            }
        );
        assert_eq!(
            delta("hi").into_event(),
            RunEventData::ModelTextDelta { text: "hi".into() }
        );
    }

    #[tokio::test]
    async fn the_relay_hands_over_all_text_once_then_ends() {
        let relay = DeltaRelay::default();
        relay.push("a");
        relay.push("b");
        assert_eq!(relay.next().await.as_deref(), Some("ab"));
        relay.push("c");
        relay.close();
        assert_eq!(relay.next().await.as_deref(), Some("c"));
        assert_eq!(relay.next().await, None);
    }

    mod stored {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

        use super::*;
        use crate::entity::{run_event, user::Plan};
        use crate::events::{EventKind, InProcessBus};
        use crate::services::{self, Viewer};

        /// The run's events, without those stored when it was queued.
        async fn run_events(db: &DatabaseConnection, run_id: Uuid) -> Vec<run_event::Model> {
            run_event::Entity::find()
                .filter(run_event::Column::RunId.eq(run_id))
                .filter(run_event::Column::Kind.ne(EventKind::RunQueued.as_str()))
                .filter(run_event::Column::Kind.ne(EventKind::MessageCreated.as_str()))
                .order_by_asc(run_event::Column::Seq)
                .all(db)
                .await
                .unwrap()
        }

        fn data(events: &[run_event::Model]) -> Vec<RunEventData> {
            events
                .iter()
                .map(|e| RunEventData::from_row(&e.kind, &e.payload).unwrap())
                .collect()
        }

        fn assert_gapless(events: &[run_event::Model]) {
            let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            let first = seqs[0];
            let expected: Vec<i64> = (first..first + seqs.len() as i64).collect();
            assert_eq!(seqs, expected, "gapless");
        }

        /// An emitter for a fresh run in a fresh SQLite database.
        async fn emitter() -> (tempfile::TempDir, DatabaseConnection, Uuid, Emitter) {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
            let db = sea_orm::Database::connect(url).await.unwrap();
            crate::app::migrate(&db).await.unwrap();
            let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new());
            let hashing = crate::auth::PasswordHashing::new(1, std::time::Duration::from_secs(30));
            let user = services::user::sign_up(&db, &hashing, "emitter@example.com", "password123")
                .await
                .unwrap();
            let viewer = Viewer {
                user_id: user.id,
                plan: Plan::Free,
            };
            let (project, generation) =
                services::project::create_project(&db, bus.as_ref(), viewer, "an app", ONE_RUN)
                    .await
                    .unwrap();
            let run_id = generation.run.id;
            let emitter = Emitter::start(db.clone(), bus, project.id, run_id);
            (dir, db, run_id, emitter)
        }

        fn output(stream: OutputStream, text: &str) -> RunEventData {
            RunEventData::ToolOutput {
                call_id: "c1".into(),
                stream: Some(stream),
                text: text.into(),
                truncated: false,
                omitted_bytes: 0,
            }
        }

        #[tokio::test]
        async fn flush_stores_queued_text_merged_between_events_in_order() {
            let (_dir, db, run_id, emitter) = emitter().await;
            emitter.emit(RunEventData::RunStarted { attempt: 1 }).await;
            for text in ["Wri", "ting ", "the page."] {
                emitter.emit_text_delta(text.into()).await;
            }
            for chunk in [
                OutputChunk::Stdout("1\n".into()),
                OutputChunk::Stdout("2\n".into()),
                OutputChunk::Stderr("warn\n".into()),
                OutputChunk::Stdout("3\n".into()),
            ] {
                emitter.emit_output("c1", chunk).await;
            }
            emitter.emit_output_omitted("c1", 42).await;
            emitter.emit_text_delta("Done.".into()).await;
            emitter.flush().await;

            let events = run_events(&db, run_id).await;
            assert_gapless(&events);
            let text = |text: &str| RunEventData::ModelTextDelta { text: text.into() };
            assert_eq!(
                data(&events),
                [
                    RunEventData::RunStarted { attempt: 1 },
                    text("Writing the page."),
                    output(OutputStream::Stdout, "1\n2\n"),
                    output(OutputStream::Stderr, "warn\n"),
                    output(OutputStream::Stdout, "3\n"),
                    RunEventData::ToolOutput {
                        call_id: "c1".into(),
                        stream: None,
                        text: String::new(),
                        truncated: true,
                        omitted_bytes: 42,
                    },
                    text("Done."),
                ]
            );
        }

        /// Text of each source as stored, in order, with neighbouring events of one source
        /// joined (how many events a source's run of text became depends on timing).
        fn joined_text(events: Vec<RunEventData>) -> Vec<(Option<OutputStream>, String)> {
            let mut joined: Vec<(Option<OutputStream>, String)> = Vec::new();
            for event in events {
                let (source, text) = match event {
                    RunEventData::ModelTextDelta { text } => (None, text),
                    RunEventData::ToolOutput { stream, text, .. } => (stream, text),
                    other => panic!("only text was sent, got {other:?}"),
                };
                match joined.last_mut() {
                    Some((last, joined_text)) if *last == source => joined_text.push_str(&text),
                    _ => joined.push((source, text)),
                }
            }
            joined
        }

        #[tokio::test]
        async fn interleaved_text_is_stored_in_order_and_whole() {
            let (_dir, db, run_id, emitter) = emitter().await;
            // Runs of each source longer than a batch, so merging both splits and joins.
            let mut sent: Vec<(Option<OutputStream>, String)> = Vec::new();
            for round in 0..12 {
                let source =
                    [None, Some(OutputStream::Stdout), Some(OutputStream::Stderr)][round % 3];
                let mut text = String::new();
                for piece in 0..(1 + round * 40) {
                    let line = format!("{round}:{piece} {}\n", "x".repeat(round * 10));
                    text.push_str(&line);
                    match source {
                        None => emitter.emit_text_delta(line).await,
                        Some(OutputStream::Stdout) => {
                            emitter.emit_output("c1", OutputChunk::Stdout(line)).await
                        }
                        Some(OutputStream::Stderr) => {
                            emitter.emit_output("c1", OutputChunk::Stderr(line)).await
                        }
                    }
                }
                sent.push((source, text));
            }
            emitter.flush().await;

            let events = run_events(&db, run_id).await;
            assert_gapless(&events);
            let stored = data(&events);
            assert!(
                stored.len() > sent.len(),
                "batches of at most {BATCH_BYTES} bytes"
            );
            assert_eq!(joined_text(stored), sent);
        }

        #[tokio::test]
        async fn more_events_than_the_channel_holds_are_all_stored() {
            let (_dir, db, run_id, emitter) = emitter().await;
            let n = CHANNEL_CAPACITY as i32 * 3;
            for attempt in 0..n {
                emitter.emit(RunEventData::RunStarted { attempt }).await;
            }
            emitter.flush().await;
            let attempts: Vec<RunEventData> = data(&run_events(&db, run_id).await);
            let expected: Vec<RunEventData> = (0..n)
                .map(|attempt| RunEventData::RunStarted { attempt })
                .collect();
            assert_eq!(attempts, expected);
        }
    }
}
