//! Command output helpers shared by the backends: incremental UTF-8 decoding (a data chunk may
//! end mid-character), a head+tail capped buffer for what the model gets back, and a stream
//! that does both while passing everything on to the caller's sink.

use super::{CommandOutput, OutputChunk, OutputSink};

/// One output stream of a command (stdout or stderr): decoded, streamed in full to the sink,
/// capped for the model.
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

    pub fn feed(&mut self, bytes: &[u8], sink: OutputSink<'_>) {
        let text = self.decoder.push(bytes);
        self.emit(text, sink);
    }

    pub fn close(&mut self, sink: OutputSink<'_>) {
        self.done = true;
        let text = self.decoder.finish();
        self.emit(text, sink);
    }

    fn emit(&mut self, text: String, sink: OutputSink<'_>) {
        if !text.is_empty() {
            self.capped.push(&text);
            sink((self.wrap)(text));
        }
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
    use super::*;

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
