//! Incremental Server-Sent Events decoder (llm-apis.md §0).
//!
//! Bytes go in as they arrive from the network (split anywhere, even inside a UTF-8 sequence or
//! between the `\r` and `\n` of a CRLF); complete events come out. Lines may end in `\n`,
//! `\r\n` or `\r`; a blank line dispatches the event; `data:` lines of one event are joined with
//! `\n`; comment lines (`:`) are ignored; a pending event is dispatched at EOF by [`finish`].
//! A non-standard `error:` line (older llama.cpp) is decoded as an event named `error`.
//!
//! [`finish`]: SseDecoder::finish

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name, if the server sent one.
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` in the next chunk belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Vec<String>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    /// Signals EOF: returns the pending event, if any, even without a trailing blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.after_cr = false;
        self.dispatch(&mut out);
        out.pop()
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "error" => {
                self.event = Some("error".to_owned());
                self.data.push(value.to_owned());
            }
            // `id`, `retry` and unknown fields do not matter to us.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        out.push(SseEvent { event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(decoder.push(chunk));
        }
        events.extend(decoder.finish());
        events
    }

    #[test]
    fn lf_separated_events() {
        let events = decode_all(&[b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n"]);
        assert_eq!(data(&events), ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn crlf_and_cr_separators() {
        let events = decode_all(&[b"data: one\r\n\r\ndata: two\r\rdata: three\n\n"]);
        assert_eq!(data(&events), ["one", "two", "three"]);
    }

    #[test]
    fn crlf_split_across_chunks() {
        let events = decode_all(&[b"data: one\r", b"\n", b"\r", b"\ndata: two\r\n\r\n"]);
        assert_eq!(data(&events), ["one", "two"]);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let input = "data: h\u{e9}llo \u{1f600}\r\n: keep-alive\r\n\r\ndata: x\n\n".as_bytes();
        for split in 0..input.len() {
            let events = decode_all(&[&input[..split], &input[split..]]);
            assert_eq!(
                data(&events),
                ["h\u{e9}llo \u{1f600}", "x"],
                "split at {split}"
            );
        }
    }

    #[test]
    fn comments_are_ignored() {
        let events = decode_all(&[b": OPENROUTER PROCESSING\n\ndata: x\n\n"]);
        assert_eq!(data(&events), ["x"]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newline() {
        let events = decode_all(&[b"data: {\"a\":\ndata:1}\n\n"]);
        assert_eq!(data(&events), ["{\"a\":\n1}"]);
    }

    #[test]
    fn only_one_space_is_stripped() {
        let events = decode_all(&[b"data:  two spaces\ndata:none\n\n"]);
        assert_eq!(data(&events), [" two spaces\nnone"]);
    }

    #[test]
    fn eof_without_blank_line_dispatches_pending_event() {
        let events = decode_all(&[b"data: first\n\ndata: [DONE]"]);
        assert_eq!(data(&events), ["first", "[DONE]"]);
        let events = decode_all(&[b"data: [DONE]\n"]);
        assert_eq!(data(&events), ["[DONE]"]);
    }

    #[test]
    fn event_names_and_error_lines() {
        let events = decode_all(&[b"event: ping\ndata: {}\n\nerror: {\"message\":\"boom\"}\n\n"]);
        assert_eq!(events[0].event.as_deref(), Some("ping"));
        assert_eq!(events[1].event.as_deref(), Some("error"));
        assert_eq!(events[1].data, "{\"message\":\"boom\"}");
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        let events = decode_all(&[b"\n\n\r\nevent: x\n\n"]);
        assert!(events.is_empty());
    }
}
