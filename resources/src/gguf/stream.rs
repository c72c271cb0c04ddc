//! [`GgufStreamLoader`]: assemble a [`GgufFile`] from chunks (browser downloads).

use super::error::GgufError;
use super::reader::{GgufFile, Header, ParseError, check_tensor_bounds, parse_header};

/// Default [`GgufStreamLoader::with_max_header_bytes`]: 256 MiB.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 256 << 20;
/// Default [`GgufStreamLoader::with_max_file_bytes`]: 64 GiB (on wasm32 `usize` caps it at 4 GiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 30;

/// Smallest header prefix worth parsing: magic, version and both counts.
const FIRST_ATTEMPT: u64 = 24;

/// Builds a [`GgufFile`] from byte chunks that arrive in file order.
///
/// The header is parsed as soon as enough bytes are in; from then on every
/// byte goes straight into one buffer allocated once with the final file size,
/// so the model is never held twice. While the header is incomplete the bytes
/// are kept in a small side buffer; parse attempts are spaced geometrically so
/// tiny chunks cost linear time overall.
///
/// The final size is the announced length ([`GgufStreamLoader::with_expected_len`],
/// e.g. `Content-Length`) or, when none was given, the end of the last
/// tensor's data: bytes after it (trailing padding) are then dropped, and
/// [`GgufFile::file_size`] reports the shortened size.
///
/// Announce the length whenever it is known: the buffer is then sized by
/// what is really being downloaded, and a header whose counts or tensors
/// cannot fit fails at once. Without it the size comes from the header
/// (bounded by [`GgufStreamLoader::with_max_file_bytes`], and reserved with
/// `try_reserve_exact`, so an impossible size is [`GgufError::OutOfMemory`],
/// not an abort); the memory is only touched as data arrives.
///
/// After an error, the loader is spent: later calls return [`GgufError::StreamFailed`].
#[derive(Debug)]
pub struct GgufStreamLoader {
    expected_len: Option<u64>,
    max_header_bytes: u64,
    max_file_bytes: u64,
    received: u64,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Header not parsed yet; the next parse attempt is when `buf` reaches `next_attempt`.
    Header { buf: Vec<u8>, next_attempt: u64 },
    /// Header parsed; `buf` has capacity `size` and fills up to it.
    Data {
        header: Header,
        buf: Vec<u8>,
        size: usize,
    },
    /// An error happened.
    Failed,
}

impl Default for GgufStreamLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufStreamLoader {
    /// A loader for a file of unknown length.
    pub fn new() -> Self {
        GgufStreamLoader {
            expected_len: None,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            received: 0,
            state: State::Header {
                buf: Vec::new(),
                next_attempt: FIRST_ATTEMPT,
            },
        }
    }

    /// Announce the file's total length: the buffer gets exactly this size,
    /// counts and tensor ranges are checked against it as soon as the header
    /// is in, and pushing more bytes is an error.
    pub fn with_expected_len(mut self, len: u64) -> Self {
        self.expected_len = Some(len);
        self
    }

    /// Fail with [`GgufError::TooLarge`] when the header is not complete after this many bytes.
    pub fn with_max_header_bytes(mut self, limit: u64) -> Self {
        self.max_header_bytes = limit;
        self
    }

    /// Fail with [`GgufError::TooLarge`] when the file (as the header
    /// describes it) is larger than this.
    pub fn with_max_file_bytes(mut self, limit: u64) -> Self {
        self.max_file_bytes = limit;
        self
    }

    /// Bytes pushed so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Whether the header has been parsed.
    pub fn header_parsed(&self) -> bool {
        matches!(self.state, State::Data { .. })
    }

    /// The final file size, once the header is parsed (or announced).
    pub fn total_len(&self) -> Option<u64> {
        match &self.state {
            State::Data { size, .. } => Some(*size as u64),
            _ => self.expected_len,
        }
    }

    /// Feed the next chunk of the file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), GgufError> {
        if matches!(self.state, State::Failed) {
            return Err(GgufError::StreamFailed);
        }
        let state = std::mem::replace(&mut self.state, State::Failed);
        self.state = self.advance(state, chunk)?;
        Ok(())
    }

    fn advance(&mut self, mut state: State, chunk: &[u8]) -> Result<State, GgufError> {
        let received = self.received.saturating_add(chunk.len() as u64);
        if let Some(expected) = self.expected_len
            && received > expected
        {
            return Err(GgufError::TooMuchData { expected });
        }
        self.received = received;
        let mut rest = chunk;
        while !rest.is_empty() {
            state = match state {
                State::Header {
                    mut buf,
                    next_attempt,
                } => {
                    let want = next_attempt.saturating_sub(buf.len() as u64);
                    let take = usize::try_from(want).unwrap_or(usize::MAX).min(rest.len());
                    let (head, tail) = rest.split_at(take);
                    buf.extend_from_slice(head);
                    rest = tail;
                    if (buf.len() as u64) < next_attempt {
                        State::Header { buf, next_attempt }
                    } else {
                        self.try_header(buf)?
                    }
                }
                State::Data {
                    header,
                    mut buf,
                    size,
                } => {
                    let room = size.saturating_sub(buf.len());
                    let take = room.min(rest.len());
                    let (head, _dropped) = rest.split_at(take);
                    // Within the reserved capacity: never reallocates.
                    buf.extend_from_slice(head);
                    // Bytes past `size` only arrive without an expected length
                    // (checked above): trailing padding, dropped.
                    rest = &[];
                    State::Data { header, buf, size }
                }
                State::Failed => return Err(GgufError::StreamFailed),
            };
        }
        Ok(state)
    }

    /// Try to parse the buffered header; on success move to the data phase.
    fn try_header(&self, buf: Vec<u8>) -> Result<State, GgufError> {
        let total = self.expected_len.unwrap_or(u64::MAX);
        match parse_header(&buf, total) {
            Ok(header) => self.start_data(header, buf),
            Err(ParseError::Fatal(e)) => Err(e),
            Err(ParseError::NeedMore { needed, .. }) => {
                let len = buf.len() as u64;
                if len >= self.max_header_bytes {
                    return Err(GgufError::TooLarge {
                        what: "GGUF header",
                        size: needed,
                        limit: self.max_header_bytes,
                    });
                }
                let mut next = needed.max(len.saturating_mul(2)).min(self.max_header_bytes);
                if let Some(expected) = self.expected_len {
                    next = next.min(expected);
                }
                Ok(State::Header {
                    buf,
                    next_attempt: next.max(len + 1),
                })
            }
        }
    }

    fn start_data(&self, header: Header, head: Vec<u8>) -> Result<State, GgufError> {
        let size = match self.expected_len {
            Some(len) => len,
            None => header
                .data_offset
                .checked_add(header.data_end)
                .ok_or(GgufError::TooLarge {
                    what: "GGUF file",
                    size: u64::MAX,
                    limit: self.max_file_bytes,
                })?,
        };
        if size > self.max_file_bytes {
            return Err(GgufError::TooLarge {
                what: "GGUF file",
                size,
                limit: self.max_file_bytes,
            });
        }
        if let Some(len) = self.expected_len {
            check_layout_fits(&header, len)?;
        }
        let size_usize = usize::try_from(size).map_err(|_| GgufError::TooLarge {
            what: "GGUF file",
            size,
            limit: usize::MAX as u64,
        })?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(size_usize)
            .map_err(|_| GgufError::OutOfMemory { bytes: size })?;
        let keep = head.len().min(size_usize);
        buf.extend_from_slice(head.get(..keep).unwrap_or(&[]));
        drop(head);
        Ok(State::Data {
            header,
            buf,
            size: size_usize,
        })
    }

    /// All bytes are in: validate and return the file.
    pub fn finish(self) -> Result<GgufFile, GgufError> {
        if matches!(self.state, State::Failed) {
            return Err(GgufError::StreamFailed);
        }
        if let Some(expected) = self.expected_len
            && self.received < expected
        {
            return Err(GgufError::Truncated {
                what: "stream",
                offset: self.received,
            });
        }
        match self.state {
            State::Header { buf, .. } => GgufFile::from_bytes(buf),
            State::Data { header, buf, .. } => GgufFile::from_header_and_bytes(header, buf),
            State::Failed => Err(GgufError::StreamFailed),
        }
    }
}

/// Check, before allocating, that a file of `len` bytes can hold the header's tensors.
fn check_layout_fits(header: &Header, len: u64) -> Result<(), GgufError> {
    if !header.tensors.is_empty() && header.data_offset > len {
        return Err(GgufError::Truncated {
            what: "data section padding",
            offset: len,
        });
    }
    check_tensor_bounds(&header.tensors, len.saturating_sub(header.data_offset))
}
