//! Command output helpers shared by the backends: incremental UTF-8 decoding (a data chunk may
//! end mid-character), a head+tail capped buffer for what the model gets back, a stream that
//! does both, and the sink that streams output to the caller, bounded in bytes and in what waits.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::{CommandOutput, OutputChunk};

/// One output stream of a command (stdout or stderr): decoded, passed to the sink, capped for
/// the model.
pub struct OutputStream {
    decoder: Utf8Stream,
    capped: CappedText,
    wrap: fn(String) -> OutputChunk,
    /// The stream has ended (`close`).
    pub done: bool,
}

impl OutputStream {
    pub fn new(cap: usize, wrap: fn(String) -> OutputChunk) -> Self {
        Self {
            decoder: Utf8Stream::default(),
            capped: CappedText::new(cap),
            wrap,
            done: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8], sink: &mut OutputSink) {
        let text = self.decoder.push(bytes);
        self.emit(text, sink);
    }

    pub fn close(&mut self, sink: &mut OutputSink) {
        self.done = true;
        let text = self.decoder.finish();
        self.emit(text, sink);
    }

    fn emit(&mut self, text: String, sink: &mut OutputSink) {
        if !text.is_empty() {
            self.capped.push(&text);
            sink.push((self.wrap)(text));
        }
    }
}

/// Where a command's output streams while it runs: at most `limit` bytes of it (stdout and
/// stderr together), the rest only counted. A chunk waits in the sink until the channel has
/// room, and the backends read no more output while one waits: a command that prints faster
/// than its output is consumed blocks on its own pipe instead of growing the server's memory.
pub struct OutputSink {
    /// `None`: nothing streams (the caller only wants the capped `CommandOutput`), or the
    /// receiver is gone.
    sender: Option<mpsc::Sender<OutputChunk>>,
    /// Bytes that may still stream.
    room: usize,
    omitted: u64,
    /// Taken but not yet in the channel. The backends push only while this is empty, and one
    /// read yields at most one chunk per stream, so it never holds more than two.
    waiting: VecDeque<OutputChunk>,
}

impl OutputSink {
    pub fn new(sender: mpsc::Sender<OutputChunk>, limit: usize) -> Self {
        Self {
            sender: Some(sender),
            room: limit,
            omitted: 0,
            waiting: VecDeque::new(),
        }
    }

    /// A sink that streams nothing.
    pub fn discard() -> Self {
        Self {
            sender: None,
            room: 0,
            omitted: 0,
            waiting: VecDeque::new(),
        }
    }

    /// Bytes of output (as UTF-8 text) that did not stream because the limit was reached.
    pub fn omitted_bytes(&self) -> u64 {
        self.omitted
    }

    /// Takes a chunk: what fits in the limit waits for `deliver`, the rest is counted.
    pub(in crate::sandbox) fn push(&mut self, mut chunk: OutputChunk) {
        if self.sender.is_none() {
            return;
        }
        let text = chunk.text_mut();
        let keep = floor_char_boundary(text, self.room.min(text.len()));
        if keep < text.len() {
            // What streams stays a prefix of the output.
            self.omitted += (text.len() - keep) as u64;
            text.truncate(keep);
            self.room = 0;
        } else {
            self.room -= keep;
        }
        if keep > 0 {
            self.waiting.push_back(chunk);
        }
    }

    /// Output waits for room in the channel: read no more until `deliver` has passed it on.
    pub(in crate::sandbox) fn is_backlogged(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Waits for room in the channel and passes the oldest waiting chunk on. Cancel-safe: a
    /// chunk leaves the sink only once the channel took it.
    pub(in crate::sandbox) async fn deliver(&mut self) {
        let delivered = match &self.sender {
            Some(sender) => match sender.reserve().await {
                Ok(permit) => {
                    if let Some(chunk) = self.waiting.pop_front() {
                        permit.send(chunk);
                    }
                    true
                }
                Err(_) => false,
            },
            None => false,
        };
        if !delivered {
            // Nobody listens (any more): stream nothing from now on.
            self.sender = None;
            self.waiting.clear();
        }
    }

    /// Passes everything waiting on.
    pub(in crate::sandbox) async fn deliver_all(&mut self) {
        while self.is_backlogged() {
            self.deliver().await;
        }
    }

    /// Takes a chunk and waits until it is passed on (for backends that produce output whole).
    pub(in crate::sandbox) async fn send(&mut self, chunk: OutputChunk) {
        self.push(chunk);
        self.deliver_all().await;
    }
}

/// A finished command: its exit code and the capped text of both streams.
pub fn command_output(exit_code: i32, stdout: OutputStream, stderr: OutputStream) -> CommandOutput {
    let (stdout, out_truncated) = stdout.capped.finish();
    let (stderr, err_truncated) = stderr.capped.finish();
    CommandOutput {
        exit_code,
        stdout,
        stderr,
        truncated: out_truncated || err_truncated,
    }
}

/// Decodes a byte stream as UTF-8, carrying an incomplete trailing sequence over to the next chunk
/// and replacing invalid bytes with U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Flushes what is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// Keeps the first and last `cap / 2` bytes of a text, counting everything in between.
#[derive(Debug)]
pub struct CappedText {
    half: usize,
    head: String,
    head_full: bool,
    tail: String,
    omitted: usize,
}

impl CappedText {
    pub fn new(cap: usize) -> Self {
        Self {
            half: cap / 2,
            head: String::new(),
            head_full: false,
            tail: String::new(),
            omitted: 0,
        }
    }

    pub fn push(&mut self, mut text: &str) {
        if !self.head_full {
            let room = self.half - self.head.len();
            let cut = floor_char_boundary(text, room.min(text.len()));
            self.head.push_str(&text[..cut]);
            text = &text[cut..];
            // Either the head is exactly full or the next char does not fit whole.
            self.head_full = !text.is_empty();
        }
        if text.is_empty() {
            return;
        }
        self.tail.push_str(text);
        // Trim lazily (at twice the size) to keep pushes amortised O(n).
        if self.tail.len() > self.half.saturating_mul(2).max(64) {
            self.trim_tail();
        }
    }

    fn trim_tail(&mut self) {
        if self.tail.len() > self.half {
            let start = ceil_char_boundary(&self.tail, self.tail.len() - self.half);
            self.omitted += start;
            self.tail.drain(..start);
        }
    }

    pub fn finish(mut self) -> (String, bool) {
        self.trim_tail();
        if self.omitted == 0 {
            return (self.head + &self.tail, false);
        }
        let marker = format!("\n… [{} bytes omitted] …\n", self.omitted);
        (self.head + &marker + &self.tail, true)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use OutputChunk::{Stderr, Stdout};

    #[test]
    fn the_limit_cuts_at_a_char_boundary_and_counts_the_rest() {
        let (sender, mut receiver) = mpsc::channel(8);
        let mut sink = OutputSink::new(sender, 5);
        sink.push(Stdout("abé".into()));
        sink.push(Stderr("éx".into()));
        sink.push(Stdout("yz".into()));
        assert_eq!(sink.deliver_all().now_or_never(), Some(()));
        assert_eq!(receiver.try_recv(), Ok(Stdout("abé".into())));
        assert!(receiver.try_recv().is_err(), "nothing after the cut");
        assert_eq!(sink.omitted_bytes(), 3 + 2);
    }

    #[test]
    fn output_waits_in_the_sink_until_the_channel_has_room() {
        let (sender, mut receiver) = mpsc::channel(1);
        let mut sink = OutputSink::new(sender, usize::MAX);
        sink.push(Stdout("1".into()));
        sink.push(Stderr("2".into()));
        assert_eq!(sink.deliver().now_or_never(), Some(()));
        assert!(sink.is_backlogged());
        // The channel is full: delivering waits, and giving up on it keeps the chunk.
        assert_eq!(sink.deliver().now_or_never(), None);
        assert!(sink.is_backlogged());
        assert_eq!(receiver.try_recv(), Ok(Stdout("1".into())));
        assert_eq!(sink.deliver().now_or_never(), Some(()));
        assert!(!sink.is_backlogged());
        assert_eq!(receiver.try_recv(), Ok(Stderr("2".into())));
    }

    #[test]
    fn a_sink_without_a_receiver_keeps_nothing() {
        let (sender, receiver) = mpsc::channel(1);
        let mut sink = OutputSink::new(sender, usize::MAX);
        sink.push(Stdout("1".into()));
        drop(receiver);
        assert_eq!(sink.deliver_all().now_or_never(), Some(()));
        sink.push(Stdout("2".into()));
        assert!(!sink.is_backlogged());

        let mut discard = OutputSink::discard();
        discard.push(Stdout("3".into()));
        assert!(!discard.is_backlogged());
    }

    #[test]
    fn utf8_split_across_chunks() {
        let bytes = "héllo → wörld".as_bytes();
        for split in 1..bytes.len() {
            let mut d = Utf8Stream::default();
            let mut out = String::new();
            for c in bytes.chunks(split) {
                out.push_str(&d.push(c));
            }
            out.push_str(&d.finish());
            assert_eq!(out, "héllo → wörld");
        }
    }

    #[test]
    fn utf8_invalid_bytes_replaced() {
        let mut d = Utf8Stream::default();
        assert_eq!(d.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(d.push(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }

    #[test]
    fn capped_keeps_head_and_tail() {
        let mut c = CappedText::new(10);
        for i in 0..100 {
            c.push(&format!("{}", i % 10));
        }
        let (text, truncated) = c.finish();
        assert!(truncated);
        assert!(text.starts_with("01234"));
        assert!(text.ends_with("56789"));
        assert!(text.contains("[90 bytes omitted]"));
    }

    #[test]
    fn capped_small_output_untouched() {
        let mut c = CappedText::new(100);
        c.push("hello ");
        c.push("world");
        assert_eq!(c.finish(), ("hello world".to_string(), false));
    }

    #[test]
    fn capped_respects_char_boundaries() {
        let mut c = CappedText::new(7);
        c.push(&"é".repeat(50));
        let (text, truncated) = c.finish();
        assert!(truncated);
        assert!(text.starts_with('é'));
        assert!(text.ends_with('é'));
    }
}
