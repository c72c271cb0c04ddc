//! Incremental detokenization for streaming generation.

use super::Tokenizer;

/// Turns token ids into text one at a time, returning only complete UTF-8: a character
/// whose bytes are spread over several tokens (byte-fallback and byte-level BPE tokens) is
/// held back until its last byte arrives. Bytes that can never become valid UTF-8 are
/// emitted as U+FFFD as soon as that is certain; [`StreamDecoder::flush`] emits U+FFFD for
/// an incomplete sequence left at the end.
///
/// Pieces are those of [`Tokenizer::token_to_piece`]; `special` selects whether control
/// tokens render as their text.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    special: bool,
}

impl StreamDecoder {
    pub fn new(special: bool) -> StreamDecoder {
        StreamDecoder {
            pending: Vec::new(),
            special,
        }
    }

    /// Adds token `id`; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        let piece = tokenizer.token_to_piece(id, self.special);
        self.push_bytes(&piece)
    }

    /// Adds raw bytes; returns the text that became complete (possibly empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
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
                    let (valid, tail) = rest.split_at(e.valid_up_to());
                    // the prefix is valid by construction
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // invalid bytes: they will never complete
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &tail[n..];
                        }
                        // an incomplete sequence at the end: wait for more bytes
                        None => {
                            rest = tail;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }

    /// Whether bytes of an incomplete character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: an incomplete sequence still held becomes U+FFFD.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_split_characters() {
        let mut d = StreamDecoder::new(false);
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(d.push_bytes(b"a"), "a");
        assert_eq!(d.push_bytes(&euro[..1]), "");
        assert!(d.has_pending());
        assert_eq!(d.push_bytes(&euro[1..2]), "");
        assert_eq!(d.push_bytes(&[euro[2], b'b']), "€b");
        assert!(!d.has_pending());
        assert_eq!(d.flush(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced_right_away() {
        let mut d = StreamDecoder::new(false);
        assert_eq!(d.push_bytes(b"x\xFFy"), "x\u{FFFD}y");
        // a lead byte followed by a non-continuation byte cannot complete
        assert_eq!(d.push_bytes(b"\xE2z"), "\u{FFFD}z");
    }

    #[test]
    fn flush_replaces_leftovers() {
        let mut d = StreamDecoder::new(false);
        assert_eq!(d.push_bytes("é".as_bytes().split_at(1).0), "");
        assert_eq!(d.flush(), "\u{FFFD}");
        assert_eq!(d.flush(), "");
    }
}
