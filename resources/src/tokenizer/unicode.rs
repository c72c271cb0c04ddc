//! Code point handling with exactly the semantics llama.cpp's `unicode.cpp` uses for
//! tokenization: a lenient UTF-8 decoder (invalid bytes become U+FFFD one byte at a
//! time, surrogates and overlong forms pass through), general-category flags from the
//! same Unicode version, and the GPT-2 byte <-> code point mapping.

use super::unicode_table::CATEGORY_RANGES;

/// Category bits (one per code point), as in llama.cpp's `unicode_cpt_flags`.
pub(crate) const CAT_UNDEFINED: u16 = 0x0001;
pub(crate) const CAT_NUMBER: u16 = 0x0002;
pub(crate) const CAT_LETTER: u16 = 0x0004;
pub(crate) const CAT_MARK: u16 = 0x0010;
pub(crate) const CAT_PUNCTUATION: u16 = 0x0020;
pub(crate) const CAT_SYMBOL: u16 = 0x0040;
/// `\s` in llama.cpp's sense (Unicode White_Space).
pub(crate) const WHITESPACE: u16 = 0x0100;

/// Flags of code point `cpt`: one category bit, plus [`WHITESPACE`]. Never 0 (code points
/// outside the table are [`CAT_UNDEFINED`]); 0 is reserved for "outside the text".
pub(crate) fn cpt_flags(cpt: u32) -> u16 {
    if (cpt as usize) < LATIN1_FLAGS.len() {
        return LATIN1_FLAGS[cpt as usize];
    }
    category(cpt) | if is_whitespace(cpt) { WHITESPACE } else { 0 }
}

const fn category(cpt: u32) -> u16 {
    if cpt >= 0x110000 {
        return CAT_UNDEFINED;
    }
    // last range whose start is <= cpt
    let (mut lo, mut hi) = (0usize, CATEGORY_RANGES.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if CATEGORY_RANGES[mid].0 <= cpt {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    CATEGORY_RANGES[lo].1 as u16
}

const fn is_whitespace(cpt: u32) -> bool {
    matches!(
        cpt,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

static LATIN1_FLAGS: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = category(c as u32)
            | if is_whitespace(c as u32) {
                WHITESPACE
            } else {
                0
            };
        c += 1;
    }
    t
};

#[inline]
pub(crate) fn is_letter(flags: u16) -> bool {
    flags & CAT_LETTER != 0
}
#[inline]
pub(crate) fn is_number(flags: u16) -> bool {
    flags & CAT_NUMBER != 0
}
#[inline]
pub(crate) fn is_mark(flags: u16) -> bool {
    flags & CAT_MARK != 0
}
#[inline]
pub(crate) fn is_ws(flags: u16) -> bool {
    flags & WHITESPACE != 0
}

/// Length of the UTF-8 sequence announced by lead byte `b` (1 for continuation and
/// invalid bytes), as llama.cpp's `unicode_len_utf8`.
#[inline]
pub(crate) fn utf8_len(b: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(b >> 4) as usize]
}

/// One symbol of a merge-based tokenizer (SentencePiece or BPE): a byte range of the text in a
/// doubly linked list of the symbols still alive.
#[derive(Clone, Copy)]
pub(crate) struct Symbol {
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) prev: Option<usize>,
    pub(crate) next: Option<usize>,
}

/// `text` split into one symbol per UTF-8 character (a truncated sequence at the end is one
/// symbol), linked in order: the starting point of both merge algorithms.
pub(crate) fn char_symbols(text: &[u8]) -> Vec<Symbol> {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let mut offs = 0;
    while offs < text.len() {
        let len = utf8_len(text[offs]).min(text.len() - offs);
        let index = symbols.len();
        symbols.push(Symbol {
            start: offs,
            len,
            prev: index.checked_sub(1),
            next: if offs + len == text.len() {
                None
            } else {
                Some(index + 1)
            },
        });
        offs += len;
    }
    symbols
}

/// Decodes `bytes` into code points like llama.cpp's `unicode_cpts_from_utf8`: a byte that
/// does not start a complete sequence (by lead/continuation bits only) becomes U+FFFD and
/// decoding resumes at the next byte. Surrogates, overlong forms and values above
/// U+10FFFF that fit the bit pattern are returned as decoded.
pub(crate) fn decode_lenient(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let (cpt, n) = decode_one(bytes, i);
        out.push(cpt);
        i += n;
    }
    out
}

#[inline]
fn decode_one(b: &[u8], i: usize) -> (u32, usize) {
    let b0 = b[i] as u32;
    let cont = |k: usize| b.get(i + k).is_some_and(|&c| c & 0xC0 == 0x80);
    let tail = |k: usize| (b[i + k] & 0x3F) as u32;
    if b0 & 0x80 == 0 {
        (b0, 1)
    } else if b0 & 0x40 == 0 {
        (0xFFFD, 1)
    } else if b0 & 0x20 == 0 {
        if cont(1) {
            (((b0 & 0x1F) << 6) | tail(1), 2)
        } else {
            (0xFFFD, 1)
        }
    } else if b0 & 0x10 == 0 {
        if cont(1) && cont(2) {
            (((b0 & 0x0F) << 12) | (tail(1) << 6) | tail(2), 3)
        } else {
            (0xFFFD, 1)
        }
    } else if b0 & 0x08 == 0 {
        if cont(1) && cont(2) && cont(3) {
            (
                ((b0 & 0x07) << 18) | (tail(1) << 12) | (tail(2) << 6) | tail(3),
                4,
            )
        } else {
            (0xFFFD, 1)
        }
    } else {
        (0xFFFD, 1)
    }
}

/// Appends the UTF-8 form of `cpt` (surrogates included, as llama.cpp does). Values above
/// U+10FFFF, which llama.cpp rejects with an exception, are written as U+FFFD.
#[inline]
pub(crate) fn push_utf8(out: &mut Vec<u8>, cpt: u32) {
    match cpt {
        0..=0x7F => out.push(cpt as u8),
        0x80..=0x7FF => {
            out.extend_from_slice(&[0xC0 | (cpt >> 6) as u8, 0x80 | (cpt & 0x3F) as u8])
        }
        0x800..=0xFFFF => out.extend_from_slice(&[
            0xE0 | (cpt >> 12) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]),
        0x10000..=0x10FFFF => out.extend_from_slice(&[
            0xF0 | (cpt >> 18) as u8,
            0x80 | ((cpt >> 12) & 0x3F) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]),
        _ => out.extend_from_slice("\u{FFFD}".as_bytes()),
    }
}

/// ASCII-only lowercase; the only code points whose Unicode lowercase is one of the ASCII
/// letters the contraction rules look at (s t m d r e v l) are those letters themselves.
#[inline]
pub(crate) fn ascii_lower(cpt: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&cpt) {
        cpt + 32
    } else {
        cpt
    }
}

/// Whether GPT-2's byte encoder maps byte `b` to the code point of the same value.
const fn byte_is_printable(b: u32) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// GPT-2 byte-level encoding: byte -> code point.
pub(crate) static BYTE_TO_CPT: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        if byte_is_printable(b as u32) {
            t[b] = b as u32;
        } else {
            t[b] = 256 + n;
            n += 1;
        }
        b += 1;
    }
    t
};

/// GPT-2 byte-level decoding: code point -> byte, for the 256 code points in the image
/// of [`BYTE_TO_CPT`].
pub(crate) fn cpt_to_byte(cpt: u32) -> Option<u8> {
    if cpt < 256 && byte_is_printable(cpt) {
        return Some(cpt as u8);
    }
    if (256..256 + 68).contains(&cpt) {
        // the (cpt - 256)-th non-printable byte
        let mut k = cpt - 256;
        for b in 0..256u32 {
            if !byte_is_printable(b) {
                if k == 0 {
                    return Some(b as u8);
                }
                k -= 1;
            }
        }
    }
    None
}

/// UTF-8 of each byte's GPT-2 code point, precomputed (1 or 2 bytes each).
pub(crate) static BYTE_TO_UTF8: [([u8; 2], u8); 256] = {
    let mut t = [([0u8; 2], 0u8); 256];
    let mut b = 0;
    while b < 256 {
        let c = BYTE_TO_CPT[b];
        t[b] = if c < 0x80 {
            ([c as u8, 0], 1)
        } else {
            ([0xC0 | (c >> 6) as u8, 0x80 | (c & 0x3F) as u8], 2)
        };
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    const SEPARATOR: u16 = 0x0008;
    const CONTROL: u16 = 0x0080;

    #[test]
    fn categories_match_unicode() {
        assert_eq!(cpt_flags('a' as u32), CAT_LETTER);
        assert_eq!(cpt_flags('7' as u32), CAT_NUMBER);
        assert_eq!(cpt_flags(' ' as u32), SEPARATOR | WHITESPACE);
        assert_eq!(cpt_flags('\n' as u32), CONTROL | WHITESPACE);
        assert_eq!(cpt_flags('$' as u32), CAT_SYMBOL);
        assert_eq!(cpt_flags('!' as u32), CAT_PUNCTUATION);
        assert_eq!(cpt_flags(0x0301), CAT_MARK);
        assert_eq!(cpt_flags(0x4E2D), CAT_LETTER); // 中
        assert_eq!(cpt_flags(0x0663), CAT_NUMBER); // ARABIC-INDIC DIGIT THREE
        assert_eq!(cpt_flags(0x3000), SEPARATOR | WHITESPACE);
        assert_eq!(cpt_flags(0x1F600), CAT_SYMBOL); // 😀
        assert_eq!(cpt_flags(0x10FFFF), CAT_UNDEFINED);
        assert_eq!(cpt_flags(0x1FFFFF), CAT_UNDEFINED);
    }

    #[test]
    fn lenient_decoding() {
        assert_eq!(decode_lenient(b"a\xC3\xA9"), vec![0x61, 0xE9]);
        assert_eq!(decode_lenient(b"\xFF\xFEx"), vec![0xFFFD, 0xFFFD, 0x78]);
        // truncated sequence: each byte on its own
        assert_eq!(decode_lenient(b"\xE2\x82"), vec![0xFFFD, 0xFFFD]);
        // surrogates pass through
        assert_eq!(decode_lenient(b"\xED\xA0\x80"), vec![0xD800]);
        let mut v = Vec::new();
        push_utf8(&mut v, 0xD800);
        assert_eq!(v, b"\xED\xA0\x80");
    }

    #[test]
    fn byte_encoder_is_a_bijection() {
        for b in 0..=255u8 {
            assert_eq!(cpt_to_byte(BYTE_TO_CPT[b as usize]), Some(b));
            let (u, n) = BYTE_TO_UTF8[b as usize];
            let s = std::str::from_utf8(&u[..n as usize]).unwrap();
            assert_eq!(s.chars().next().unwrap() as u32, BYTE_TO_CPT[b as usize]);
        }
        assert_eq!(BYTE_TO_CPT[b' ' as usize], 0x120); // 'Ġ'
        assert_eq!(BYTE_TO_CPT[b'\n' as usize], 0x10A); // 'Ċ'
        assert_eq!(cpt_to_byte(0x41), Some(b'A'));
        assert_eq!(cpt_to_byte(0x4E2D), None);
    }
}
