#!/usr/bin/env python3
"""Differential fuzzing of the tokenizer against llama.cpp's reference driver.

Writes random texts (mixed scripts, emoji, whitespace runs, special-token texts and
fragments, invalid UTF-8), tokenizes each with `ref tok VOCAB ADD_SPECIAL PARSE_SPECIAL
FILE...` for several vocabularies and flag pairs, and stores the results as JSON for the
ignored test `reference_driver_dump_matches` (resources/tests/tokenizer_fixtures.rs):

    python3 fuzz_against_ref.py SEED N OUT_DIR
    CHORD_TOK_CASES=OUT_DIR/cases.json cargo test -p chord-resources \
        --test tokenizer_fixtures -- --ignored reference_driver_dump_matches

Code points above U+10FFFF are avoided: llama.cpp throws on them (BPE vocabularies).
"""
import json
import os
import random
import subprocess
import sys

SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 1
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
OUT = sys.argv[3] if len(sys.argv) > 3 else "/tmp/chord-tok-fuzz"
CACHE = os.path.expanduser("~/.cache/wasm-chord")
MODELS = os.environ.get("CHORD_MODELS", CACHE + "/models") + "/"
REF = os.environ.get("CHORD_REF", CACHE + "/llama-ref")
VOCABS = REF + "/llama.cpp-src/models/"
random.seed(SEED)
pools = [
 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
 " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\u000b\u000c",
 "éèêëàâäôöûüçñßÆØÅæøåœ", "привет мир Ёё", "αβγδ ΑΒΓΔ ά", "中文字符测试你好世界", "日本語のテキストカタカナ", "한국어 텍스트",
 "हिन्दी नमस्ते", "العربية مرحبا", "עברית שלום", "ไทย สวัสดี", "😀😃🎉👍🏽👨‍👩‍👧‍👦🦙", "\u0301\u0308\u0327", "\u00a0\u3000\u2028\u0085\u2009\u200b\u200d\ufeff",
 "\u0000\u0001\u001f\u007f", "½¾²³①Ⅻ٣٤۵", "ﬁﬀ ＡＢＣ１２３", "€£¥₹©®™°±×÷", "\U0001D400\U0001F9D1\U00010437",
]
specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
 "<unused5>", "<0x41>", "[INST]", "<|begin_of_text|>", "<|eot_id|>", "<|fim_prefix|>", "<tool_call>", "</tool_call>", "<|user|>", "<|end|>", "<|assistant|>",
 "<|system|>", "<mask>", "[multimodal]", "<|im_start", "im_end|>", "<|", "|>", "<h1>", "</div>", "<|reserved_special_token_5|>", "<repo_name>", "[PAD32011]"]
words = ["the", "The", "hello", "world", "don't", "I'm", "we'll", "they're", "YOU'VE", "it's", "'s", "'S", "http://x.y/z?a=1", "C:\\path\\file.txt", "def f(x):", "    return x", "1234567", "3.14159", "1,000,000", "$100", "__init__", "snake_case", "camelCase"]
def piece():
    r = random.random()
    if r < 0.25: return random.choice(words)
    if r < 0.40: return random.choice(specials)
    if r < 0.47: return bytes(random.randint(0x80, 0xff) for _ in range(random.randint(1,3)))
    p = random.choice(pools)
    return ''.join(random.choice(p) for _ in range(random.randint(1, 6))) if random.random()<0.7 else p
IN = os.path.join(OUT, 'in')
os.makedirs(IN, exist_ok=True)
for f in os.listdir(IN): os.remove(os.path.join(IN, f))
names=[]
for i in range(N):
    parts=[piece() for _ in range(random.randint(1, 8))]
    b=b''.join(p if isinstance(p,bytes) else p.encode('utf-8') for p in parts)
    if random.random() < 0.05: b = b' ' + b
    if random.random() < 0.05: b = b + b'  '
    # avoid code points above U+10FFFF (llama.cpp throws on those)
    b = b.replace(b'\xf5', b'\xf0').replace(b'\xf6', b'\xf0').replace(b'\xf7', b'\xf0').replace(b'\xf4', b'\xf3')
    n=os.path.join(IN, '%05d.txt'%i)
    open(n,'wb').write(b); names.append(n)

vocabs=[MODELS+'SmolLM2-135M-Instruct.Q4_1.gguf', MODELS+'gemma-3-270m-q4_k_m.gguf', MODELS+'qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf',
        VOCABS+'ggml-vocab-llama-bpe.gguf', VOCABS+'ggml-vocab-llama-spm.gguf', VOCABS+'ggml-vocab-phi-3.gguf', VOCABS+'ggml-vocab-gpt-2.gguf',
        VOCABS+'ggml-vocab-qwen35.gguf', VOCABS+'ggml-vocab-deepseek-llm.gguf', VOCABS+'ggml-vocab-falcon.gguf', VOCABS+'ggml-vocab-gemma-4.gguf', VOCABS+'ggml-vocab-starcoder.gguf',
        VOCABS+'ggml-vocab-command-r.gguf', VOCABS+'ggml-vocab-mpt.gguf', VOCABS+'ggml-vocab-deepseek-coder.gguf', VOCABS+'ggml-vocab-refact.gguf']
ref=REF+'/bin/ref'
vocabs=[v for v in vocabs if os.path.exists(v)]
cases=[]
for v in vocabs:
    for (a,p) in [(0,0),(1,1),(0,1)]:
        r=subprocess.run([ref,'tok',v,str(a),str(p)]+names, capture_output=True)
        if r.returncode!=0: print('ref failed', v, a, p, r.stderr[-500:]); continue
        d=json.loads(r.stdout)
        for res in d['results']:
            cases.append({'vocab':v,'add_special':bool(a),'parse_special':bool(p),'text_hex':open(res['file'],'rb').read().hex(),'ids':res['ids'],'pieces_hex':res['pieces_hex']})
json.dump(cases, open(os.path.join(OUT, 'cases.json'),'w'))
print(len(cases))
