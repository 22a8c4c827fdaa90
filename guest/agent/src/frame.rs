// Framing of the agent protocol (docs/protocol.md, "Framing"): a u32 length, a u32 stream id,
// a type byte and the payload, all big-endian; plus a decoder that splits a byte stream into
// frames and refuses an out-of-bounds length before buffering the body.

use std::fmt;

/// Offsets of the header fields.
const LENGTH_FIELD: usize = 0;
const STREAM_FIELD: usize = 4;
const TYPE_FIELD: usize = 8;
pub const HEADER_SIZE: usize = 9;
/// Bytes counted by `length` that are not payload: stream (4) + type (1).
const LENGTH_OVERHEAD: u32 = 5;

pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// Largest data chunk a sender should produce.
pub const MAX_CHUNK: usize = 64 * 1024;
pub const MAX_STREAMS: usize = 1024;
pub const INITIAL_WINDOW: u32 = 256 * 1024;
pub const MAX_PING: usize = 64;
pub const PROTOCOL_VERSION: i64 = 1;

/// Message types (docs/protocol.md, "Messages").
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const INIT: u8 = 0x02;
    pub const READY: u8 = 0x03;
    pub const PING: u8 = 0x04;
    pub const PONG: u8 = 0x05;
    pub const SHUTDOWN: u8 = 0x06;
    pub const EXEC: u8 = 0x10;
    pub const STDIN: u8 = 0x11;
    pub const STDOUT: u8 = 0x12;
    pub const STDERR: u8 = 0x13;
    pub const EXIT: u8 = 0x14;
    pub const SIGNAL: u8 = 0x15;
    pub const WINDOW: u8 = 0x16;
    pub const RESIZE: u8 = 0x17;
    pub const FILE: u8 = 0x20;
    pub const FILE_RESULT: u8 = 0x21;
    pub const DATA: u8 = 0x22;
    pub const ERROR: u8 = 0x7f;

    pub fn name(kind: u8) -> Option<&'static str> {
        Some(match kind {
            HELLO => "HELLO",
            INIT => "INIT",
            READY => "READY",
            PING => "PING",
            PONG => "PONG",
            SHUTDOWN => "SHUTDOWN",
            EXEC => "EXEC",
            STDIN => "STDIN",
            STDOUT => "STDOUT",
            STDERR => "STDERR",
            EXIT => "EXIT",
            SIGNAL => "SIGNAL",
            WINDOW => "WINDOW",
            RESIZE => "RESIZE",
            FILE => "FILE",
            FILE_RESULT => "FILE_RESULT",
            DATA => "DATA",
            ERROR => "ERROR",
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub stream: u32,
    pub kind: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is outside 5 ..= 5 + MAX_PAYLOAD.
    BadLength(u32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength(len) => write!(
                f,
                "frame length {len} is outside {}..={} (a frame carries at most {MAX_PAYLOAD} payload bytes)",
                LENGTH_OVERHEAD,
                LENGTH_OVERHEAD as usize + MAX_PAYLOAD
            ),
        }
    }
}

fn check_length(length: u32) -> Result<(), FrameError> {
    if length < LENGTH_OVERHEAD || length as usize > LENGTH_OVERHEAD as usize + MAX_PAYLOAD {
        return Err(FrameError::BadLength(length));
    }
    Ok(())
}

/// Appends the 9-byte header of a frame whose payload has `payload_len` bytes.
pub fn push_header(out: &mut Vec<u8>, stream: u32, kind: u8, payload_len: usize) {
    debug_assert!(payload_len <= MAX_PAYLOAD);
    out.extend_from_slice(&(LENGTH_OVERHEAD + payload_len as u32).to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(kind);
}

/// Rewrites the length field of the header at `at` once the payload behind it is known.
pub fn patch_length(buf: &mut [u8], at: usize, payload_len: usize) {
    let len = LENGTH_OVERHEAD + payload_len as u32;
    buf[at + LENGTH_FIELD..at + STREAM_FIELD].copy_from_slice(&len.to_be_bytes());
}

/// Appends a whole frame. Payloads over MAX_PAYLOAD are a bug in the caller.
pub fn encode_into(out: &mut Vec<u8>, stream: u32, kind: u8, payload: &[u8]) {
    assert!(payload.len() <= MAX_PAYLOAD, "frame payload of {} bytes exceeds MAX_PAYLOAD", payload.len());
    push_header(out, stream, kind, payload.len());
    out.extend_from_slice(payload);
}

#[cfg(test)]
pub fn encode(stream: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    encode_into(&mut out, stream, kind, payload);
    out
}

/// Splits a byte stream into frames. Holds at most one frame plus what one read brought.
///
/// `buf[start..end]` holds received bytes; `buf` beyond `end` is initialised spare room that
/// reads land in. Keeping it (rather than zero-filling a fresh 64 KiB per read) matters: a
/// virtio-console read returns at most one 4 KiB buffer, and under emulation the zeroing cost
/// more than the data.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Bytes received but not yet returned as frames.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    #[cfg(test)]
    pub fn push(&mut self, data: &[u8]) {
        let _ = self.fill_with::<()>(data.len(), |room| {
            room[..data.len()].copy_from_slice(data);
            Ok(data.len())
        });
    }

    /// Lets a reader fill the buffer directly; `fill` returns how many bytes it wrote.
    pub fn fill_with<E>(&mut self, max: usize, fill: impl FnOnce(&mut [u8]) -> Result<usize, E>) -> Result<usize, E> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end + max > self.buf.len() {
            // Move the partial frame to the front rather than grow.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + max {
            self.buf.resize(self.end + max, 0);
        }
        let result = fill(&mut self.buf[self.end..self.end + max]);
        let n = *result.as_ref().unwrap_or(&0);
        self.end += n.min(max);
        result
    }

    /// The next complete frame, None if more bytes are needed. An error is final: the stream
    /// cannot be resynchronised after a bad length.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes(avail[LENGTH_FIELD..STREAM_FIELD].try_into().unwrap());
        check_length(length)?;
        let total = 4 + length as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let stream = u32::from_be_bytes(avail[STREAM_FIELD..TYPE_FIELD].try_into().unwrap());
        let kind = avail[TYPE_FIELD];
        let payload = avail[HEADER_SIZE..total].to_vec();
        self.start += total;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(Frame { stream, kind, payload }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::json::{self, Value};

    const VECTORS: &str = include_str!("../../../docs/protocol-vectors.json");

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    pub(crate) fn vectors() -> Value {
        json::parse(VECTORS.as_bytes()).expect("docs/protocol-vectors.json parses")
    }

    pub(crate) fn vector(name: &str) -> Value {
        let all = vectors();
        all.get("valid")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no vector named {name}"))
            .clone()
    }

    #[test]
    fn limits_match_the_vectors_file() {
        let v = vectors();
        assert_eq!(v.get("maxPayload").unwrap().as_i64(), Some(MAX_PAYLOAD as i64));
        assert_eq!(v.get("maxStreams").unwrap().as_i64(), Some(MAX_STREAMS as i64));
        assert_eq!(v.get("initialWindow").unwrap().as_i64(), Some(INITIAL_WINDOW as i64));
    }

    #[test]
    fn every_valid_vector_decodes_and_encodes_back() {
        let all = vectors();
        let valid = all.get("valid").unwrap().as_array().unwrap();
        assert!(valid.len() >= 13, "the vectors file lost entries");
        for v in valid {
            let name = v.get("name").unwrap().as_str().unwrap();
            let bytes = hex(v.get("hex").unwrap().as_str().unwrap());
            let mut d = Decoder::new();
            d.push(&bytes);
            let frame = d.next_frame().unwrap().unwrap_or_else(|| panic!("{name}: incomplete"));
            assert_eq!(d.buffered(), 0, "{name}: bytes left over");
            assert_eq!(frame.stream as i64, v.get("stream").unwrap().as_i64().unwrap(), "{name}: stream");
            assert_eq!(frame.kind as i64, v.get("type").unwrap().as_i64().unwrap(), "{name}: type");
            assert!(kind::name(frame.kind).is_some(), "{name}: unknown type");
            if let Some(expected) = v.get("json") {
                let parsed = json::parse(&frame.payload).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(&parsed, expected, "{name}: payload JSON");
                // Our serializer keeps key order and writes no spaces: byte-identical.
                assert_eq!(parsed.to_json().as_bytes(), &frame.payload[..], "{name}: JSON re-encoding");
            } else {
                let payload = hex(v.get("payloadHex").unwrap().as_str().unwrap());
                assert_eq!(frame.payload, payload, "{name}: payload");
            }
            assert_eq!(encode(frame.stream, frame.kind, &frame.payload), bytes, "{name}: encoding");
        }
    }

    #[test]
    fn every_invalid_vector_is_rejected() {
        let all = vectors();
        let invalid = all.get("invalid").unwrap().as_array().unwrap();
        assert!(!invalid.is_empty());
        for v in invalid {
            let name = v.get("name").unwrap().as_str().unwrap();
            let bytes = hex(v.get("hex").unwrap().as_str().unwrap());
            let mut d = Decoder::new();
            d.push(&bytes);
            assert!(
                matches!(d.next_frame(), Err(FrameError::BadLength(_))),
                "{name} ({}) must be rejected",
                v.get("reason").unwrap().as_str().unwrap()
            );
        }
    }

    #[test]
    fn a_bad_length_is_rejected_from_the_first_four_bytes() {
        let mut d = Decoder::new();
        d.push(&[0x00, 0x10, 0x00, 0x06]);
        assert_eq!(d.next_frame(), Err(FrameError::BadLength(0x0010_0006)));
        let mut d = Decoder::new();
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn the_largest_payload_is_accepted() {
        let payload = vec![0xab; MAX_PAYLOAD];
        let bytes = encode(3, kind::STDIN, &payload);
        let mut d = Decoder::new();
        d.push(&bytes);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.payload.len(), MAX_PAYLOAD);
    }

    #[test]
    fn frames_split_across_reads_and_packed_together() {
        let mut stream = Vec::new();
        let all = vectors();
        let valid = all.get("valid").unwrap().as_array().unwrap();
        for v in valid {
            stream.extend(hex(v.get("hex").unwrap().as_str().unwrap()));
        }
        // One byte at a time.
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), valid.len());
        // All at once.
        let mut d = Decoder::new();
        d.push(&stream);
        let mut n = 0;
        while d.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, valid.len());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn fill_with_appends_only_what_was_read() {
        let mut d = Decoder::new();
        let bytes = encode(1, kind::PING, b"xy");
        let n = d
            .fill_with::<()>(4096, |buf| {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            })
            .unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(d.buffered(), bytes.len());
        assert_eq!(d.next_frame().unwrap().unwrap().payload, b"xy");
        let r: Result<usize, &str> = d.fill_with(4096, |_| Err("boom"));
        assert!(r.is_err());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn header_patching() {
        let mut out = Vec::new();
        push_header(&mut out, 7, kind::STDOUT, 0);
        out.extend_from_slice(b"hi\n");
        patch_length(&mut out, 0, 3);
        assert_eq!(out, hex(vector("stdout").get("hex").unwrap().as_str().unwrap()));
    }
}
