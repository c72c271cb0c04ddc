//! Unit tests on small hand-made vocabularies (the fixture tests against llama.cpp's
//! output live in `resources/tests/tokenizer_fixtures.rs`).

use super::*;

fn spm_data() -> TokenizerData {
    // id: text, score, type
    let mut tokens: Vec<(&str, f32, i32)> =
        vec![("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)];
    let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
    for b in &bytes {
        tokens.push((b.as_str(), 0.0, 6));
    }
    tokens.extend([
        ("▁", -1.0, 1),
        ("h", -2.0, 1),
        ("e", -2.0, 1),
        ("l", -2.0, 1),
        ("o", -2.0, 1),
        ("▁h", -3.0, 1),
        ("he", -1.5, 1),
        ("ll", -1.0, 1),
        ("llo", -0.5, 1),
        ("hello", -0.1, 1),
        ("▁hello", -0.05, 1),
        ("<tag>", 0.0, 4),
    ]);
    TokenizerData {
        model: "llama".into(),
        tokens: tokens.iter().map(|t| t.0.as_bytes().to_vec()).collect(),
        scores: Some(tokens.iter().map(|t| t.1).collect()),
        token_types: Some(tokens.iter().map(|t| t.2).collect()),
        ..TokenizerData::default()
    }
}

fn id(t: &Tokenizer, text: &str) -> u32 {
    t.token_id(text.as_bytes()).unwrap()
}

#[test]
fn spm_merges_by_score_and_adds_space_prefix() {
    let t = Tokenizer::from_data(spm_data()).unwrap();
    assert_eq!(t.encode("hello", false, false), [id(&t, "▁hello")]);
    assert_eq!(t.encode("hello", true, false), [1, id(&t, "▁hello")]);
    assert_eq!(t.encode("", true, false), [1]);
    assert!(t.encode("", false, false).is_empty());
    // "hell": ▁ h e l l -> "ll" (-1.0) first, then ▁h (-3.0) vs he (-1.5): "he" wins
    assert_eq!(
        t.encode("hell", false, false),
        [id(&t, "▁"), id(&t, "he"), id(&t, "ll")]
    );
}

#[test]
fn spm_byte_fallback() {
    let t = Tokenizer::from_data(spm_data()).unwrap();
    let ids = t.encode("hé", false, false);
    assert_eq!(ids, [id(&t, "▁h"), id(&t, "<0xC3>"), id(&t, "<0xA9>")]);
    assert_eq!(t.decode(&ids), "hé");
    // invalid UTF-8 goes byte by byte as well
    assert_eq!(
        t.encode_bytes(b"\xFF", false, false),
        [id(&t, "▁"), id(&t, "<0xFF>")]
    );
}

#[test]
fn special_tokens_are_split_out() {
    let t = Tokenizer::from_data(spm_data()).unwrap();
    let s = id(&t, "<s>");
    // control tokens only with parse_special; the text after a special token gets a space prefix
    assert_eq!(t.encode("<s>hello", false, true), [s, id(&t, "▁hello")]);
    assert_ne!(t.encode("<s>hello", false, false)[0], s);
    // user-defined tokens are split out even without parse_special
    let tag = id(&t, "<tag>");
    assert_eq!(
        t.encode("hello<tag>", false, false),
        [id(&t, "▁hello"), tag]
    );
}

#[test]
fn decode_and_pieces() {
    let t = Tokenizer::from_data(spm_data()).unwrap();
    let ids = t.encode("hello hello", true, false);
    assert_eq!(t.decode(&ids), " hello hello");
    assert_eq!(t.token_to_piece(1, false), b"");
    assert_eq!(t.token_to_piece(1, true), b"<s>");
    assert_eq!(t.token_to_piece(u32::MAX, true), b"");
    // without BOS the first piece loses its prefix space
    assert_eq!(t.decode(&ids[1..]), "hello hello");
    assert!(t.is_eog(2));
    assert_eq!(t.bos(), Some(1));
    assert_eq!(t.eos(), Some(2));
}

fn gpt2_data() -> TokenizerData {
    // byte-level: 'Ġ' is the space byte
    let tokens = [
        "<|endoftext|>",
        "h",
        "e",
        "l",
        "o",
        "Ġ",
        "he",
        "ll",
        "hell",
        "hello",
        "Ġhello",
        "!",
        "<|im_end|>",
    ];
    TokenizerData {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
        token_types: Some(vec![3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3]),
        merges: Some(
            ["l l", "h e", "he ll", "hell o", "Ġ hello"]
                .iter()
                .map(|m| m.as_bytes().to_vec())
                .collect(),
        ),
        bos: Some(0),
        eos: Some(0),
        ..TokenizerData::default()
    }
}

#[test]
fn bpe_merges_by_rank() {
    let t = Tokenizer::from_data(gpt2_data()).unwrap();
    assert_eq!(t.encode("hello hello!", false, false), [9, 10, 11]);
    assert_eq!(t.decode(&[9, 10, 11]), "hello hello!");
    // "<|im_end|>" was auto-detected as end of turn
    assert_eq!(t.eot(), Some(12));
    assert!(t.is_eog(12) && t.is_eog(0));
    assert_eq!(t.encode("hello<|im_end|>", false, true), [9, 12]);
    // unknown characters have no byte tokens in this vocabulary and vanish, as in llama.cpp
    assert_eq!(t.encode("hé", false, false), [1]);
}

#[test]
fn bpe_without_merges_is_an_error() {
    let mut d = gpt2_data();
    d.merges = None;
    assert!(matches!(
        Tokenizer::from_data(d),
        Err(TokenizerError::MissingMerges)
    ));
}

#[test]
fn bad_metadata_is_a_typed_error() {
    let mut d = spm_data();
    d.scores = Some(vec![0.0; 3]);
    assert!(matches!(
        Tokenizer::from_data(d),
        Err(TokenizerError::ShortArray { .. })
    ));
    let mut d = spm_data();
    d.model = "bert-ish".into();
    assert!(matches!(
        Tokenizer::from_data(d),
        Err(TokenizerError::UnsupportedModel(_))
    ));
    let mut d = gpt2_data();
    d.pre = Some("no-such-pre".into());
    assert!(matches!(
        Tokenizer::from_data(d),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));
    assert!(matches!(
        Tokenizer::from_data(TokenizerData::default()),
        Err(TokenizerError::EmptyVocab)
    ));
    // out-of-range special ids fall back to the defaults instead of failing
    let mut d = spm_data();
    d.bos = Some(1 << 40);
    d.eos = Some(99_999);
    let t = Tokenizer::from_data(d).unwrap();
    assert_eq!((t.bos(), t.eos()), (Some(1), Some(2)));
}

#[test]
fn clean_up_spaces_matches_llama() {
    assert_eq!(
        clean_up_spaces(b"a , b . c ' d 's e 're f 't"),
        b"a, b. c'd's e're f 't"
    );
    assert_eq!(clean_up_spaces(b"a ' ' b"), b"a'' b");
    assert_eq!(clean_up_spaces(b""), b"");
}

#[test]
fn partition_honours_rstrip() {
    let mut d = spm_data();
    d.name = Some("Phi3".into());
    let t = Tokenizer::from_data(d).unwrap();
    // phi-3: special tokens strip following whitespace, "<s>" does not
    assert_ne!(t.token_attr(id(&t, "<tag>")) & attr::RSTRIP, 0);
    assert_eq!(t.token_attr(id(&t, "<s>")) & attr::RSTRIP, 0);
    assert_eq!(
        t.encode("<tag>   hello", false, false),
        [id(&t, "<tag>"), id(&t, "▁hello")]
    );
}

#[test]
fn find_substrings() {
    assert_eq!(find(b"abcabd", b"abd"), Some(3));
    assert_eq!(find(b"ab", b"abc"), None);
    assert_eq!(find(b"", b"a"), None);
    assert_eq!(find(b"aaa", b""), None);
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<StreamDecoder>();
}

#[test]
fn arbitrary_bytes_never_panic() {
    let spm = Tokenizer::from_data(spm_data()).unwrap();
    let bpe = Tokenizer::from_data(gpt2_data()).unwrap();
    let mut d = gpt2_data();
    d.pre = Some("default".into()); // regex-based pre-tokenizer
    let bpe_regex = Tokenizer::from_data(d).unwrap();
    // code points above U+10FFFF (lead bytes F5..F7) and truncated sequences included
    let mut samples: Vec<Vec<u8>> = vec![
        b"\xF7\xBF\xBF\xBF".to_vec(),
        b"\xF4\x90\x80\x80x".to_vec(),
        b"\xE2\x82".to_vec(),
        b"<s".to_vec(),
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..300 {
        let len = (state % 24) as usize;
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.push(match state % 5 {
                0 => b' ',
                1 => b"hel<s>/"[(state >> 8) as usize % 7],
                _ => (state >> 16) as u8,
            });
        }
        samples.push(v);
    }
    for s in &samples {
        for t in [&spm, &bpe, &bpe_regex] {
            for (a, p) in [(false, false), (true, true)] {
                let ids = t.encode_bytes(s, a, p);
                assert!(ids.iter().all(|&id| (id as usize) < t.n_vocab()));
                let _ = t.decode(&ids);
            }
        }
    }
    // SentencePiece keeps every byte
    let ids = spm.encode_bytes(b"\xF7\xBF\xBF\xBF", false, false);
    assert_eq!(spm.detokenize(&ids, false), b"\xF7\xBF\xBF\xBF");
}
