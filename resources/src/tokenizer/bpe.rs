//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), as llama.cpp's
//! `llm_tokenizer_bpe_session`: pre-tokenize into words, map each word's UTF-8 bytes to
//! GPT-2's printable code points, then within each word repeatedly apply the merge with the
//! lowest rank (leftmost on ties).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::Vocab;
use super::pretokenize::PreTokenizer;
use super::unicode::{BYTE_TO_UTF8, Symbol, char_symbols, decode_lenient, push_utf8};

#[derive(Debug)]
pub(super) struct Bpe {
    /// merge rank by `"left right"` (the merge line as stored in GGUF)
    ranks: HashMap<Box<[u8]>, u32>,
    pub(super) pre: PreTokenizer,
    /// use a whole word as one token when the vocabulary has it (Llama-3 style)
    pub(super) ignore_merges: bool,
    /// use a word made only of newlines as one token when the vocabulary has it (Gemma 4)
    pub(super) whole_newline_words: bool,
}

impl Bpe {
    /// `merges`: the `tokenizer.ggml.merges` lines, `"left right"`, lowest rank first.
    pub(super) fn new<'a>(
        merges: impl IntoIterator<Item = &'a [u8]>,
        pre: PreTokenizer,
        ignore_merges: bool,
    ) -> Bpe {
        let mut ranks = HashMap::new();
        for (rank, line) in merges.into_iter().enumerate() {
            // llama.cpp splits at the first space after the first byte; lines without one
            // map to an empty pair that no lookup can produce, so they are dropped here.
            if !line.iter().skip(1).any(|&b| b == b' ') {
                continue;
            }
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            ranks.entry(Box::<[u8]>::from(line)).or_insert(rank);
        }
        Bpe {
            ranks,
            pre,
            ignore_merges,
            whole_newline_words: false,
        }
    }

    fn rank(&self, key: &mut Vec<u8>, left: &[u8], right: &[u8]) -> Option<u32> {
        key.clear();
        key.extend_from_slice(left);
        key.push(b' ');
        key.extend_from_slice(right);
        self.ranks.get(key.as_slice()).copied()
    }

    /// Tokenizes one text fragment (`text` is raw, possibly invalid UTF-8; for SPM-style
    /// BPE vocabularies the caller has already escaped spaces) and appends to `out`.
    pub(super) fn tokenize(&self, vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
        let cpts = decode_lenient(text);
        let lengths = self.pre.split(&cpts);
        let mut word = Vec::new();
        let mut scratch = Vec::new();
        let mut start = 0;
        for len in lengths {
            word.clear();
            for &c in &cpts[start..start + len] {
                if self.pre.byte_encode {
                    scratch.clear();
                    push_utf8(&mut scratch, c);
                    for &b in &scratch {
                        let (u, n) = BYTE_TO_UTF8[b as usize];
                        word.extend_from_slice(&u[..n as usize]);
                    }
                } else {
                    push_utf8(&mut word, c);
                }
            }
            start += len;
            self.tokenize_word(vocab, &word, &mut scratch, out);
        }
    }

    fn tokenize_word(&self, vocab: &Vocab, word: &[u8], key: &mut Vec<u8>, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if (self.ignore_merges || (self.whole_newline_words && word.iter().all(|&b| b == b'\n')))
            && let Some(id) = vocab.lookup(word)
        {
            out.push(id);
            return;
        }
        let mut symbols = char_symbols(word);

        // (rank, left, right, left len, right len), smallest first
        type Entry = Reverse<(u32, usize, usize, usize, usize)>;
        let mut queue: BinaryHeap<Entry> = BinaryHeap::new();
        let add = |symbols: &[Symbol],
                   queue: &mut BinaryHeap<Entry>,
                   key: &mut Vec<u8>,
                   left: Option<usize>,
                   right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (l, r) = (symbols[left], symbols[right]);
            let (lt, rt) = (
                &word[l.start..l.start + l.len],
                &word[r.start..r.start + r.len],
            );
            if let Some(rank) = self.rank(key, lt, rt) {
                queue.push(Reverse((rank, left, right, l.len, r.len)));
            }
        };
        for i in 1..symbols.len() {
            add(&symbols, &mut queue, key, Some(i - 1), Some(i));
        }
        while let Some(Reverse((_, left, right, llen, rlen))) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            // outdated: one side has changed since the pair was queued
            if l.len == 0 || r.len == 0 || l.len != llen || r.len != rlen {
                continue;
            }
            symbols[left].len += r.len;
            symbols[right].len = 0;
            symbols[left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(left);
            }
            let merged = symbols[left];
            add(&symbols, &mut queue, key, merged.prev, Some(left));
            add(&symbols, &mut queue, key, Some(left), merged.next);
        }

        let mut i = Some(0);
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &word[s.start..s.start + s.len];
            match vocab.lookup(piece) {
                Some(id) => out.push(id),
                None => {
                    // unknown piece: one token per byte where the vocabulary has one
                    for &b in piece {
                        let id = if self.pre.byte_encode {
                            vocab.lookup(&[b])
                        } else {
                            vocab.lookup(format!("<0x{b:02X}>").as_bytes())
                        };
                        if let Some(id) = id {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}
