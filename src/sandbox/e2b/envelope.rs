//! Connect-protocol envelopes (reference §5.2): `flags: u8`, `len: u32` big-endian, then `len` bytes
//! of JSON. Flag `0x02` marks the final EndStream envelope; `0x01` (compressed) is never negotiated.

pub const FLAG_COMPRESSED: u8 = 0x01;
pub const FLAG_END_STREAM: u8 = 0x02;
const HEADER_LEN: usize = 5;
/// Refuse absurd lengths instead of buffering them (envd chunks are ≤ 32 KiB of base64 data).
pub const MAX_ENVELOPE_LEN: usize = 16 * 1024 * 1024;

/// Wraps one message in an envelope.
pub fn encode(flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("envelope payload fits in u32");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Envelope {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("compressed envelope received but no compression was negotiated")]
    Compressed,
    #[error("envelope of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Incremental decoder: envelopes are not aligned with HTTP chunks, so bytes are buffered until a
/// whole envelope is present.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete envelope, `Ok(None)` when more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if flags & FLAG_COMPRESSED != 0 {
            return Err(EnvelopeError::Compressed);
        }
        if len > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge(len));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(Envelope { flags, payload }))
    }

    /// Bytes received that do not (yet) form an envelope.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_matches_reference_header() {
        let out = encode(0, b"{}");
        assert_eq!(out, vec![0, 0, 0, 0, 2, b'{', b'}']);
        let end = encode(FLAG_END_STREAM, b"{}");
        assert_eq!(end[0], 0x02);
    }

    #[test]
    fn decodes_across_arbitrary_chunk_boundaries() {
        let mut wire = encode(0, br#"{"event":{"start":{"pid":1}}}"#);
        wire.extend(encode(0, br#"{"event":{"keepalive":{}}}"#));
        wire.extend(encode(FLAG_END_STREAM, b"{}"));
        for split in 1..wire.len() {
            let mut dec = Decoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                dec.push(chunk);
                while let Some(env) = dec.next_envelope().unwrap() {
                    got.push(env);
                }
            }
            assert_eq!(got.len(), 3, "split {split}");
            assert!(got[2].is_end_stream());
            assert_eq!(dec.pending(), 0);
        }
    }

    #[test]
    fn refuses_compressed_and_huge() {
        let mut dec = Decoder::new();
        dec.push(&[FLAG_COMPRESSED, 0, 0, 0, 0]);
        assert_eq!(dec.next_envelope(), Err(EnvelopeError::Compressed));
        let mut dec = Decoder::new();
        dec.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            dec.next_envelope(),
            Err(EnvelopeError::TooLarge(_))
        ));
    }
}
