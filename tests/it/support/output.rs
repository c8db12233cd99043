//! What a command streams, recorded as the agent consumes it: a bounded sink drained by a task.

use std::sync::{Arc, Mutex};

use codekraft::sandbox::{OutputChunk, OutputSink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Recorder {
    chunks: Arc<Mutex<Vec<OutputChunk>>>,
    drain: JoinHandle<()>,
}

/// A sink that streams up to `limit` bytes, and the recorder that drains it.
pub fn recorder(limit: usize) -> (OutputSink, Recorder) {
    let (sender, mut receiver) = mpsc::channel(4);
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let recorded = chunks.clone();
    let drain = tokio::spawn(async move {
        while let Some(chunk) = receiver.recv().await {
            recorded.lock().unwrap().push(chunk);
        }
    });
    (OutputSink::new(sender, limit), Recorder { chunks, drain })
}

impl Recorder {
    /// Nothing has streamed yet.
    pub fn is_empty(&self) -> bool {
        self.chunks.lock().unwrap().is_empty()
    }

    /// Everything `sink` streamed (the sink is done with once this is asked).
    pub async fn finish(self, sink: OutputSink) -> Vec<OutputChunk> {
        drop(sink);
        self.drain.await.unwrap();
        std::mem::take(&mut *self.chunks.lock().unwrap())
    }
}

/// The streamed text of stdout (`true`) or stderr.
pub fn joined(chunks: &[OutputChunk], stdout: bool) -> String {
    chunks
        .iter()
        .filter_map(|c| match (c, stdout) {
            (OutputChunk::Stdout(s), true) | (OutputChunk::Stderr(s), false) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}
