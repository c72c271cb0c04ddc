//! BPE pre-tokenization: splitting a text fragment into words before merges.
//!
//! llama.cpp applies a list of regexes one after the other, each one splitting the pieces
//! produced by the previous one (every match and every gap between matches becomes a
//! piece). The common GPT-2 / Llama-3 / Qwen2 expressions are not run through a regex
//! engine there but through hand-written scanners whose corner cases differ slightly from
//! real regex semantics; [`Splitter::Gpt2`], [`Splitter::Llama3`], [`Splitter::Qwen2`] and
//! [`Splitter::Qwen35`] reproduce those scanners. All other expressions go through a regex
//! engine on a "collapsed" copy of the text in which every non-ASCII code point is replaced
//! by a stand-in for its general category, which is how llama.cpp evaluates `\p{..}`
//! classes with `std::regex`.

use super::TokenizerError;
use super::unicode::{
    CAT_LETTER, CAT_MARK, CAT_NUMBER, CAT_PUNCTUATION, CAT_SYMBOL, WHITESPACE, ascii_lower,
    cpt_flags, is_letter, is_mark, is_number, is_ws,
};

/// One splitting stage.
#[derive(Debug)]
pub(crate) enum Splitter {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// Llama3 with `\p{N}` instead of `\p{N}{1,3}`.
    Qwen2,
    /// Qwen2 where letter runs also take combining marks.
    Qwen35,
    /// `[^\n]+|[\n]+`
    Newlines,
    /// Any other expression, through `fancy_regex`.
    Regex(RegexSplitter),
}

/// How the tokenizer pre-splits text, chosen from `tokenizer.ggml.pre`.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    pub(crate) splitters: Vec<Splitter>,
    /// GPT-2 byte-level encoding of the words (false for SPM-style BPE vocabularies).
    pub(crate) byte_encode: bool,
}

/// Tokenizer flags implied by a pre-tokenizer name (llama.cpp `llama_vocab::impl::load`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PreFlags {
    /// a word that is a token as a whole is not merged (Llama-3 style)
    pub(crate) ignore_merges: bool,
    /// `add_bos` defaults to true
    pub(crate) add_bos: bool,
    /// detokenization removes spaces before punctuation (`clean_up_tokenization_spaces`)
    pub(crate) clean_spaces: bool,
    /// spaces become `▁` before BPE (SPM-style BPE vocabularies)
    pub(crate) escape_whitespaces: bool,
    /// there is no default BOS token
    pub(crate) no_bos: bool,
    /// Gemma 4 style: newline-only words stay whole, and BOS is always added
    pub(crate) gemma4: bool,
}

const CONTRACTIONS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = name` (BPE vocabularies),
    /// with the flags that name implies.
    pub(crate) fn for_name(name: &str) -> Result<(PreTokenizer, PreFlags), TokenizerError> {
        use Splitter::*;
        let mut flags = PreFlags {
            clean_spaces: true,
            ..PreFlags::default()
        };
        let re = |s: &str| RegexSplitter::new(s).map(Regex);
        let mut byte_encode = true;
        let splitters = match name {
            "" | "default" => vec![
                re(r"[\p{P}\$\+<=>\^~\|]+")?,
                Gpt2,
                re(r"\p{N}+")?,
                re(r"[0-9][0-9][0-9]")?,
            ],
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => {
                flags.ignore_merges = true;
                flags.add_bos = true;
                vec![Llama3]
            }
            "dbrx" | "smaug-bpe" => vec![Llama3],
            "glm4" | "chatglm-bpe" => {
                flags.no_bos = true;
                vec![Llama3]
            }
            "tekken" => {
                flags.clean_spaces = false;
                flags.ignore_merges = true;
                flags.add_bos = true;
                vec![re(
                    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                )?]
            }
            "deepseek-llm" => {
                flags.clean_spaces = false;
                vec![
                    re("[\r\n]")?,
                    re(
                        "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
                    )?,
                    re(
                        "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
                    )?,
                    re("\\s+$")?,
                    re("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+")?,
                    re("\\p{N}+")?,
                ]
            }
            "deepseek-coder" => {
                flags.clean_spaces = false;
                vec![
                    re("[\r\n]")?,
                    re("\\s?\\p{L}+")?,
                    re("\\s?\\p{P}+")?,
                    re("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+")?,
                    re("\\p{N}")?,
                ]
            }
            "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
                flags.clean_spaces = false;
                vec![
                    re("\\p{N}{1,3}")?,
                    re("[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+")?,
                    re(
                        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
                    )?,
                ]
            }
            "falcon" => vec![re(r"[\p{P}\$\+<=>\^~\|`]+")?, Gpt2, re("[0-9][0-9][0-9]")?],
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                vec![re(r"\p{N}")?, Gpt2]
            }
            "command-r" | "smollm" => {
                flags.clean_spaces = false;
                vec![re(r"\p{N}")?, Gpt2]
            }
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "mpt" | "olmo"
            | "jais" => {
                vec![Gpt2]
            }
            "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => vec![Gpt2],
            "trillion" | "granite-docling" => {
                flags.clean_spaces = false;
                vec![Gpt2]
            }
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
            | "grok-2" => {
                flags.clean_spaces = false;
                vec![Qwen2]
            }
            "stablelm2" | "megrez" => vec![Qwen2],
            "qwen35" => {
                flags.clean_spaces = false;
                vec![Qwen35]
            }
            "poro-chat" | "bloom" | "gpt3-finnish" => {
                if name == "poro-chat" {
                    flags.clean_spaces = false;
                }
                vec![re(
                    " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+",
                )?]
            }
            "viking" => {
                flags.clean_spaces = false;
                vec![
                    re(" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+")?,
                    re(r"\p{N}")?,
                ]
            }
            "chameleon" => {
                flags.add_bos = true;
                flags.clean_spaces = false;
                vec![
                    re("<sentinel:[0-9]+>")?,
                    re("(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z")?,
                    re("([\\t\\n]|    |  )")?,
                    re(r"\p{N}")?,
                    re(r"[\p{P}!-/:-@\[-`{-~]")?,
                    Gpt2,
                ]
            }
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
                flags.clean_spaces = false;
                vec![re(&format!(
                    r"[^\r\n\p{{L}}\p{{N}}]?((?=[\p{{L}}])([^a-z]))*((?=[\p{{L}}])([^A-Z]))+{CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?((?=[\p{{L}}])([^a-z]))+((?=[\p{{L}}])([^A-Z]))*{CONTRACTIONS}?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
                ))?]
            }
            "bailingmoe" | "bailingmoe2" | "llada-moe" => {
                flags.clean_spaces = false;
                vec![re(
                    r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
                )?]
            }
            "seed-coder" => {
                flags.clean_spaces = false;
                vec![re(&format!(
                    r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1}}| ?[^\s\p{{L}}\p{{N}}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"
                ))?]
            }
            "ufakzeka" => {
                flags.clean_spaces = false;
                vec![re(
                    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                )?]
            }
            "minicpm5" => {
                flags.ignore_merges = true;
                vec![
                    re(r"\p{N}{1,3}")?,
                    re(&format!(
                        r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}+| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
                    ))?,
                ]
            }
            "jais-2" => vec![re(&format!(
                r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s{{512}}(?!\S)|\s{{256}}(?!\S)|\s{{128}}(?!\S)|\s{{64}}(?!\S)|\s{{32}}(?!\S)|\s{{16}}(?!\S)|\s{{8}}(?!\S)|\s{{4}}(?!\S)|\s{{1,2}}(?!\S)|\s{{1}}"
            ))?],
            "laguna" => {
                flags.clean_spaces = false;
                vec![Newlines, Qwen2]
            }
            "gemma4" | "granite-embed-multi-311m" => {
                flags.escape_whitespaces = true;
                flags.gemma4 = true;
                byte_encode = false;
                vec![Newlines]
            }
            "sarvam-moe" => {
                flags.escape_whitespaces = true;
                flags.clean_spaces = false;
                byte_encode = false;
                vec![Newlines]
            }
            "whitespace" => {
                byte_encode = false;
                vec![re(r"\S+")?]
            }
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        };
        Ok((
            PreTokenizer {
                splitters,
                byte_encode,
            },
            flags,
        ))
    }

    /// Splits `cpts` into words; returns the length (in code points) of each word.
    pub(crate) fn split(&self, cpts: &[u32]) -> Vec<usize> {
        let mut offsets = vec![cpts.len()];
        if cpts.is_empty() {
            return offsets;
        }
        let mut collapsed: Option<Collapsed> = None;
        let mut wide: Option<Collapsed> = None;
        for s in &self.splitters {
            offsets = match s {
                Splitter::Gpt2 => scan(cpts, &offsets, scan_gpt2),
                Splitter::Llama3 => scan(cpts, &offsets, |s, e| scan_llama3(s, e, Digits::UpTo3)),
                Splitter::Qwen2 => scan(cpts, &offsets, |s, e| scan_llama3(s, e, Digits::One)),
                Splitter::Qwen35 => scan(cpts, &offsets, scan_qwen35),
                Splitter::Newlines => split_newlines(cpts, &offsets),
                Splitter::Regex(r) => {
                    let text = if r.collapsed {
                        collapsed.get_or_insert_with(|| Collapsed::new(cpts, true))
                    } else {
                        wide.get_or_insert_with(|| Collapsed::new(cpts, false))
                    };
                    r.split(text, &offsets)
                }
            };
        }
        offsets
    }
}

const OUT: u32 = u32::MAX;

/// The code points of one piece being scanned, with llama.cpp's out-of-range conventions:
/// positions outside the piece read as code point `OUT` with flags 0.
struct Seg<'a> {
    cpts: &'a [u32],
    ini: usize,
    end: usize,
}

impl Seg<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> u32 {
        if self.ini <= pos && pos < self.end {
            self.cpts[pos]
        } else {
            OUT
        }
    }
    #[inline]
    fn flags(&self, pos: usize) -> u16 {
        if self.ini <= pos && pos < self.end {
            cpt_flags(self.cpts[pos])
        } else {
            0
        }
    }
}

/// Collects word lengths: `add(end)` closes the word that started at the previous end.
struct Emit<'a> {
    out: &'a mut Vec<usize>,
    prev_end: usize,
}

impl Emit<'_> {
    #[inline]
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

fn scan(cpts: &[u32], offsets: &[usize], f: impl Fn(&Seg, &mut Emit)) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len() * 4);
    let mut start = 0;
    for &len in offsets {
        let seg = Seg {
            cpts,
            ini: start,
            end: start + len,
        };
        let mut emit = Emit {
            out: &mut out,
            prev_end: start,
        };
        f(&seg, &mut emit);
        start += len;
    }
    out
}

#[inline]
fn is_apos_suffix1(c: u32) -> bool {
    c == 's' as u32 || c == 't' as u32 || c == 'm' as u32 || c == 'd' as u32
}

#[inline]
fn is_apos_suffix2(c1: u32, c2: u32) -> bool {
    let (c1, c2) = (char::from_u32(c1), char::from_u32(c2));
    matches!(
        (c1, c2),
        (Some('r' | 'v'), Some('e')) | (Some('l'), Some('l'))
    )
}

/// Contraction at `pos` (`'s`, `'re`, ...): its length in code points.
#[inline]
fn contraction(s: &Seg, pos: usize, fold_case: bool) -> Option<usize> {
    if s.cpt(pos) != '\'' as u32 || pos + 1 >= s.end {
        return None;
    }
    let low = |c: u32| if fold_case { ascii_lower(c) } else { c };
    let c1 = low(s.cpt(pos + 1));
    if is_apos_suffix1(c1) {
        return Some(2);
    }
    if pos + 2 < s.end && is_apos_suffix2(c1, low(s.cpt(pos + 2))) {
        return Some(3);
    }
    None
}

#[inline]
fn not_ws_letter_number(flags: u16) -> bool {
    flags & (WHITESPACE | CAT_LETTER | CAT_NUMBER) == 0
}

/// llama.cpp `unicode_regex_split_custom_gpt2`.
fn scan_gpt2(s: &Seg, e: &mut Emit) {
    let mut pos = s.ini;
    while pos < s.end {
        let cpt = s.cpt(pos);
        let flags = s.flags(pos);
        if let Some(n) = contraction(s, pos, false) {
            pos += e.add(pos + n);
            continue;
        }
        let space = cpt == ' ' as u32;
        let mut flags2 = if space { s.flags(pos + 1) } else { flags };
        // <space>?\p{L}+ , <space>?\p{N}+ , <space>?[^\s\p{L}\p{N}]+
        let class: Option<fn(u16) -> bool> = if is_letter(flags2) {
            Some(is_letter)
        } else if is_number(flags2) {
            Some(is_number)
        } else if not_ws_letter_number(flags2) && flags2 != 0 {
            Some(|f| not_ws_letter_number(f) && f != 0)
        } else {
            None
        };
        if let Some(class) = class {
            pos += space as usize;
            while class(flags2) {
                pos += 1;
                flags2 = s.flags(pos);
            }
            e.add(pos);
            continue;
        }
        let mut num_ws = 0;
        while is_ws(s.flags(pos + num_ws)) {
            num_ws += 1;
        }
        // \s+(?!\S)
        if num_ws > 1 && s.cpt(pos + num_ws) != OUT {
            pos += num_ws - 1;
            e.add(pos);
            continue;
        }
        // \s+
        if num_ws > 0 {
            pos += num_ws;
            e.add(pos);
            continue;
        }
        // no match
        pos += 1;
        e.add(pos);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Digits {
    One,
    UpTo3,
}

/// llama.cpp `unicode_regex_split_custom_llama3` (`Digits::UpTo3`) and
/// `unicode_regex_split_custom_qwen2` (`Digits::One`).
fn scan_llama3(s: &Seg, e: &mut Emit, digits: Digits) {
    let (cr, lf) = ('\r' as u32, '\n' as u32);
    let mut pos = s.ini;
    while pos < s.end {
        let cpt = s.cpt(pos);
        let flags = s.flags(pos);
        if let Some(n) = contraction(s, pos, true) {
            pos += e.add(pos + n);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(cpt == cr || cpt == lf || is_number(flags))
            && (is_letter(flags) || is_letter(s.flags(pos + 1)))
        {
            pos += 1;
            while is_letter(s.flags(pos)) {
                pos += 1;
            }
            e.add(pos);
            continue;
        }
        // \p{N}{1,3} or \p{N}
        if is_number(flags) {
            match digits {
                Digits::One => {
                    pos += 1;
                    e.add(pos);
                }
                Digits::UpTo3 => {
                    let mut ini = pos;
                    while is_number(s.flags(pos)) {
                        pos += 1;
                        if pos - ini >= 3 {
                            e.add(pos);
                            ini = pos;
                        }
                    }
                    e.add(pos);
                }
            }
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        let space = cpt == ' ' as u32;
        let mut flags2 = if space { s.flags(pos + 1) } else { flags };
        if not_ws_letter_number(flags2) && flags != 0 {
            pos += space as usize;
            while not_ws_letter_number(flags2) && flags2 != 0 {
                pos += 1;
                flags2 = s.flags(pos);
            }
            let mut c2 = s.cpt(pos);
            while c2 == cr || c2 == lf {
                pos += 1;
                c2 = s.cpt(pos);
            }
            e.add(pos);
            continue;
        }
        if scan_whitespace(s, e, &mut pos) {
            continue;
        }
        pos += 1;
        e.add(pos);
    }
}

/// The whitespace alternatives shared by the Llama-3 style scanners:
/// `\s*[\r\n]+|\s+(?!\S)|\s+`. Returns false when there is no whitespace at `pos`.
#[inline]
fn scan_whitespace(s: &Seg, e: &mut Emit, pos: &mut usize) -> bool {
    let (cr, lf) = ('\r' as u32, '\n' as u32);
    let mut num_ws = 0;
    let mut last_end_r_or_n = 0;
    while is_ws(s.flags(*pos + num_ws)) {
        let c2 = s.cpt(*pos + num_ws);
        if c2 == cr || c2 == lf {
            last_end_r_or_n = *pos + num_ws + 1;
        }
        num_ws += 1;
    }
    if last_end_r_or_n > 0 {
        *pos = last_end_r_or_n;
        e.add(*pos);
        return true;
    }
    if num_ws > 1 && s.cpt(*pos + num_ws) != OUT {
        *pos += num_ws - 1;
        e.add(*pos);
        return true;
    }
    if num_ws > 0 {
        *pos += num_ws;
        e.add(*pos);
        return true;
    }
    false
}

/// llama.cpp `unicode_regex_split_custom_qwen35`.
fn scan_qwen35(s: &Seg, e: &mut Emit) {
    let (cr, lf) = ('\r' as u32, '\n' as u32);
    let lm = |f: u16| is_letter(f) || is_mark(f);
    let mut pos = s.ini;
    while pos < s.end {
        let cpt = s.cpt(pos);
        let flags = s.flags(pos);
        if let Some(n) = contraction(s, pos, true) {
            pos += e.add(pos + n);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+
        if !(cpt == cr || cpt == lf || is_number(flags)) && (lm(flags) || lm(s.flags(pos + 1))) {
            pos += 1;
            while lm(s.flags(pos)) {
                pos += 1;
            }
            e.add(pos);
            continue;
        }
        if is_number(flags) {
            pos += 1;
            e.add(pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{M}\p{N}]+[\r\n]*
        let other = |f: u16| f & (WHITESPACE | CAT_LETTER | CAT_MARK | CAT_NUMBER) == 0;
        let space = cpt == ' ' as u32;
        let mut flags2 = if space { s.flags(pos + 1) } else { flags };
        if other(flags2) && flags != 0 {
            pos += space as usize;
            while other(flags2) && flags2 != 0 {
                pos += 1;
                flags2 = s.flags(pos);
            }
            let mut c2 = s.cpt(pos);
            while c2 == cr || c2 == lf {
                pos += 1;
                c2 = s.cpt(pos);
            }
            e.add(pos);
            continue;
        }
        if scan_whitespace(s, e, &mut pos) {
            continue;
        }
        pos += 1;
        e.add(pos);
    }
}

/// `[^\n]+|[\n]+`
fn split_newlines(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let nl = cpts[pos] == '\n' as u32;
            let run = pos;
            while pos < end && (cpts[pos] == '\n' as u32) == nl {
                pos += 1;
            }
            out.push(pos - run);
        }
        start = end;
    }
    out
}

// ---------------------------------------------------------------------------------------
// regex fallback

/// Stand-ins for non-ASCII code points in collapsed text, one per category (private-use
/// code points, so that no Unicode-aware class of the regex engine matches them).
const STAND_IN_OTHER: char = '\u{E0D0}';
const STAND_IN_NUMBER: char = '\u{E0D1}';
const STAND_IN_LETTER: char = '\u{E0D2}';
const STAND_IN_PUNCT: char = '\u{E0D3}';
const STAND_IN_MARK: char = '\u{E0D4}';
const STAND_IN_SYMBOL: char = '\u{E0D5}';

/// A text prepared for the regex engine: one `char` per code point.
struct Collapsed {
    text: String,
    /// byte offset in `text` of each code point, plus the total length
    byte_of: Vec<usize>,
}

impl Collapsed {
    /// `collapse`: replace non-ASCII code points by their category stand-in (the text the
    /// `\p{..}` expressions run on); otherwise keep them, except that non-ASCII whitespace
    /// becomes `\x0B` and code points that are not `char`s become U+FFFD.
    fn new(cpts: &[u32], collapse: bool) -> Collapsed {
        let mut text = String::with_capacity(cpts.len());
        let mut byte_of = Vec::with_capacity(cpts.len() + 1);
        for &c in cpts {
            byte_of.push(text.len());
            let ch = if c < 0x80 {
                c as u8 as char
            } else {
                let f = cpt_flags(c);
                if is_ws(f) {
                    '\x0B'
                } else if !collapse {
                    char::from_u32(c).unwrap_or('\u{FFFD}')
                } else {
                    match f & !WHITESPACE {
                        CAT_NUMBER => STAND_IN_NUMBER,
                        CAT_LETTER => STAND_IN_LETTER,
                        CAT_PUNCTUATION => STAND_IN_PUNCT,
                        CAT_MARK => STAND_IN_MARK,
                        CAT_SYMBOL => STAND_IN_SYMBOL,
                        _ => STAND_IN_OTHER,
                    }
                }
            };
            text.push(ch);
        }
        byte_of.push(text.len());
        Collapsed { text, byte_of }
    }

    fn cpt_at_byte(&self, byte: usize) -> usize {
        self.byte_of.partition_point(|&b| b < byte)
    }
}

/// One regex stage, run with `fancy_regex`.
#[derive(Debug)]
pub(crate) struct RegexSplitter {
    re: fancy_regex::Regex,
    /// whether the expression uses `\p{..}` and so runs on collapsed text
    collapsed: bool,
}

impl RegexSplitter {
    pub(crate) fn new(expr: &str) -> Result<RegexSplitter, TokenizerError> {
        let collapsed = [
            "\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}", "\\p{Lu}", "\\p{Ll}", "\\p{Lt}",
            "\\p{Lm}", "\\p{Lo}",
        ]
        .iter()
        .any(|c| expr.contains(c));
        let pattern = if collapsed {
            collapse_regex(expr)
        } else {
            expr.replace("\\d", "[0-9]")
        };
        let re = fancy_regex::Regex::new(&pattern)
            .map_err(|e| TokenizerError::Regex(format!("{expr}: {e}")))?;
        Ok(RegexSplitter { re, collapsed })
    }

    /// Splits every piece of `offsets` at the matches of the expression (matches and the
    /// gaps between them both become pieces).
    fn split(&self, text: &Collapsed, offsets: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(offsets.len() * 2);
        let mut start = 0;
        for &len in offsets {
            let (b0, b1) = (text.byte_of[start], text.byte_of[start + len]);
            let piece = &text.text[b0..b1];
            let mut prev = start;
            for m in self.re.find_iter(piece) {
                // a regex engine error (backtrack limit) ends the matching of this piece
                let Ok(m) = m else { break };
                if m.start() == m.end() {
                    continue;
                }
                let (ms, me) = (
                    text.cpt_at_byte(b0 + m.start()),
                    text.cpt_at_byte(b0 + m.end()),
                );
                if ms > prev {
                    out.push(ms - prev);
                }
                out.push(me - ms);
                prev = me;
            }
            if start + len > prev {
                out.push(start + len - prev);
            }
            start += len;
        }
        out
    }
}

/// Rewrites `\p{..}` classes of `expr` for collapsed text: a class matches its ASCII members
/// and its non-ASCII stand-in (as llama.cpp's `unicode_regex_split` does).
fn collapse_regex(expr: &str) -> String {
    fn class_of(name: &str) -> Option<String> {
        let (stand_in, ascii) = match name {
            "N" => (STAND_IN_NUMBER, "0-9"),
            "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => (STAND_IN_LETTER, "A-Za-z"),
            "P" => (STAND_IN_PUNCT, r"!-#%-*,-/:-;?-@\[-\]_\{\}"),
            "M" => (STAND_IN_MARK, ""),
            "S" => (STAND_IN_SYMBOL, r"\$\+<->\^`\|~"),
            _ => return None,
        };
        Some(format!("{stand_in}{ascii}"))
    }
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '[' && (i == 0 || chars[i - 1] != '\\') {
            out.push('[');
            inside = true;
            i += 1;
            continue;
        }
        if inside && c == ']' && chars[i - 1] != '\\' {
            out.push(']');
            inside = false;
            i += 1;
            continue;
        }
        if c == '\\'
            && chars.get(i + 1) == Some(&'p')
            && chars.get(i + 2) == Some(&'{')
            && let Some(close) = chars[i + 3..].iter().position(|&c| c == '}')
            && let Some(class) = class_of(&chars[i + 3..i + 3 + close].iter().collect::<String>())
        {
            if !inside {
                out.push('[');
            }
            out.push_str(&class);
            if !inside {
                out.push(']');
            }
            i += 3 + close + 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let (p, _) = PreTokenizer::for_name(pre).unwrap();
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let mut start = 0;
        p.split(&cpts)
            .into_iter()
            .map(|n| {
                let w: String = text.chars().skip(start).take(n).collect();
                start += n;
                w
            })
            .collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words("gpt-2", "Hello world's  end!!\n"),
            ["Hello", " world", "'s", " ", " end", "!!", "\n"]
        );
        assert_eq!(words("gpt-2", "a 123  b"), ["a", " 123", " ", " b"]);
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words("llama-bpe", "I'M 12345 ok\n\n  x"),
            ["I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn qwen2_words() {
        assert_eq!(words("qwen2", "abc 123"), ["abc", " ", "1", "2", "3"]);
    }

    #[test]
    fn smollm_splits_digits_first() {
        assert_eq!(
            words("smollm", "x 2024 y"),
            ["x", " ", "2", "0", "2", "4", " y"]
        );
        // non-ASCII digits are \p{N} too
        assert_eq!(words("smollm", "٣٤"), ["٣", "٤"]);
    }

    #[test]
    fn default_pre_tokenizer() {
        // punctuation runs first, then GPT-2 words, then digit runs, then groups of three digits
        assert_eq!(
            words("default", "a+b = 1234;"),
            ["a", "+", "b", " ", "=", " ", "123", "4", ";"]
        );
    }

    #[test]
    fn collapse_rewrites_classes() {
        let r = collapse_regex(r"[^\r\n\p{L}\p{N}]?\p{L}+");
        assert_eq!(
            r,
            format!(
                r"[^\r\n{STAND_IN_LETTER}A-Za-z{STAND_IN_NUMBER}0-9]?[{STAND_IN_LETTER}A-Za-z]+"
            )
        );
    }

    #[test]
    fn unknown_pre_is_an_error() {
        assert!(matches!(
            PreTokenizer::for_name("no-such-pre"),
            Err(TokenizerError::UnsupportedPreTokenizer(_))
        ));
    }
}
