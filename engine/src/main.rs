//! `chord`: the wasm-chord command line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use chord_engine::{
    ActivationPrecision, Backend, Engine, EngineError, EngineOptions, Event, GenerateParams,
    KvPrecision, SamplingParams, SeqStats, SpeculateParams, models,
};
use chord_resources::config::ModelConfig;
use chord_resources::gguf::{GgufFile, Value};
use chord_resources::tokenizer::{ChatMessage, Tokenizer};

#[derive(Parser)]
#[command(
    name = "chord",
    version,
    about = "wasm-chord: run GGUF language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, hyperparameters, tensors and tokenizer.
    Info {
        model: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of a text file as a JSON array.
    Tokenize {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        file: PathBuf,
        /// Add BOS/EOS as the model's metadata asks.
        #[arg(long)]
        add_special: bool,
        /// Recognise special tokens written in the text.
        #[arg(long)]
        parse_special: bool,
    },
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// Chat interactively (the model's chat template is applied, history is kept).
    Chat {
        #[command(flatten)]
        common: ModelArgs,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Most tokens per reply.
        #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
        n: usize,
        /// System prompt.
        #[arg(long)]
        system: Option<String>,
    },
    /// Teacher-forced scoring: top-K [id, logit] pairs after every prefix of the ids.
    Score {
        #[command(flatten)]
        common: ModelArgs,
        #[arg(long)]
        ids_file: PathBuf,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
    },
    /// Perplexity of a text file (llama-perplexity's method).
    Perplexity {
        #[command(flatten)]
        common: ModelArgs,
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Speculative decoding speed: greedy decode alone, with the draft model, and with prompt
    /// lookup, interleaved in one run on a code-completion and a chat prompt (identical output
    /// is checked).
    BenchSpec {
        #[command(flatten)]
        common: ModelArgs,
        /// Draft model (omit to compare lookup only).
        #[arg(long)]
        draft_model: Option<PathBuf>,
        /// Most draft tokens per step.
        #[arg(long, default_value_t = 8)]
        draft_k: usize,
        /// Code prompt, completed as is.
        #[arg(long, default_value = "benches/prompts/code.txt")]
        code_prompt: PathBuf,
        /// Chat prompt, sent as a user message through the chat template.
        #[arg(long, default_value = "benches/prompts/chat.txt")]
        chat_prompt: PathBuf,
        /// Code-editing request (a chat message whose answer repeats most of its input, where
        /// prompt lookup shines).
        #[arg(long, default_value = "benches/prompts/edit.txt")]
        edit_prompt: PathBuf,
        #[arg(short = 'n', default_value_t = 128)]
        decode: usize,
        #[arg(short = 'r', long, default_value_t = 2)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Prefill and decode speed, llama-bench style: `pp` times one prompt of `-p` tokens;
    /// `tg` times `-n` decode steps in a separate run that starts from an empty context (a
    /// one-token prompt), as llama-bench and the reference driver do; `--depth D` decodes after
    /// a D-token prompt instead (attention over a filled cache).
    Bench {
        #[command(flatten)]
        common: ModelArgs,
        #[arg(short = 'p', default_value_t = 512)]
        prefill: usize,
        #[arg(short = 'n', default_value_t = 128)]
        decode: usize,
        /// Context already in the cache when decoding starts (0 = llama-bench's tg).
        #[arg(long, default_value_t = 0)]
        depth: usize,
        #[arg(short = 'r', long, default_value_t = 1)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// GGUF model (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// Compute threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Context length (0 = model's, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    ctx_size: usize,
    /// Activations in matrix products: f32 (exact math, default) or q8 (ggml's int8 arithmetic, faster).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: ActivationPrecision,
    /// K/V cache type: f32 (default) or f16 (half the memory).
    #[arg(long = "kv", default_value = "f32", value_parser = parse_kv)]
    kv: KvPrecision,
    /// Wake the compute threads for every parallel job instead of keeping them spinning
    /// through a step (slower; for comparison).
    #[arg(long)]
    no_spin: bool,
    /// Where the forward pass runs: cpu (default), gpu, or auto (a real GPU if present).
    #[arg(long, default_value = "cpu")]
    backend: Backend,
}

fn parse_kv(s: &str) -> Result<KvPrecision, String> {
    match s {
        "f32" => Ok(KvPrecision::F32),
        "f16" => Ok(KvPrecision::F16),
        _ => Err(format!("unknown K/V cache type {s:?} (f32 or f16)")),
    }
}

fn parse_precision(s: &str) -> Result<ActivationPrecision, String> {
    match s {
        "f32" => Ok(ActivationPrecision::F32),
        "q8" => Ok(ActivationPrecision::Q8),
        _ => Err(format!("unknown precision {s:?} (f32 or q8)")),
    }
}

#[derive(Args)]
struct SamplingArgs {
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

impl SamplingArgs {
    fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.repeat_last_n,
            logit_bias: Vec::new(),
            seed: self.seed,
        }
    }
}

/// Speculative decoding options.
#[derive(Args, Clone)]
struct SpecArgs {
    /// Draft model for speculative decoding (must share the model's vocabulary).
    #[arg(long)]
    draft_model: Option<PathBuf>,
    /// Prompt-lookup speculative decoding (drafts copied from earlier in the context; no model).
    #[arg(long, conflicts_with = "draft_model")]
    lookup: bool,
    /// Most draft tokens per step.
    #[arg(long, default_value_t = 8)]
    draft_k: usize,
    /// Keep the draft length fixed instead of adapting it to the acceptance rate.
    #[arg(long)]
    draft_fixed: bool,
    /// Activations of the draft model: q8 (default, faster) or f32. The output does not depend
    /// on it, only how often drafts are accepted.
    #[arg(long, default_value = "q8", value_parser = parse_precision)]
    draft_precision: ActivationPrecision,
}

impl SpecArgs {
    fn params(&self) -> Option<SpeculateParams> {
        let mut p = if self.draft_model.is_some() {
            SpeculateParams::draft_model(self.draft_k)
        } else if self.lookup {
            SpeculateParams::lookup(self.draft_k)
        } else {
            return None;
        };
        p.adaptive = !self.draft_fixed;
        Some(p)
    }

    fn load_into(&self, engine: &mut Engine) -> CliResult {
        engine.set_draft_precision(self.draft_precision);
        if let Some(path) = &self.draft_model {
            let t = Instant::now();
            engine.load_draft(path)?;
            eprintln!(
                "loaded draft {} in {:.0} ms",
                path.display(),
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(())
    }
}

fn spec_summary(s: &SeqStats) -> String {
    if s.n_drafted == 0 {
        return String::new();
    }
    format!(
        " | drafts accepted {}/{} ({:.0}%)",
        s.n_draft_accepted,
        s.n_drafted,
        100.0 * s.acceptance_rate()
    )
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    common: ModelArgs,
    #[command(flatten)]
    spec: SpecArgs,
    #[arg(long, short = 'p', conflicts_with = "prompt_file")]
    prompt: Option<String>,
    #[arg(long, short = 'f')]
    prompt_file: Option<PathBuf>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Info { model, json } => info(&model, json),
        Command::Tokenize {
            model,
            file,
            add_special,
            parse_special,
        } => tokenize(model, &file, add_special, parse_special),
        Command::Generate(args) => generate(args),
        Command::Chat {
            common,
            spec,
            sampling,
            n,
            system,
        } => chat(common, spec, sampling, n, system),
        Command::Score {
            common,
            ids_file,
            top_k,
        } => score(common, &ids_file, top_k),
        Command::Perplexity {
            common,
            ctx,
            file,
            json,
        } => perplexity(common, ctx, &file, json),
        Command::BenchSpec {
            common,
            draft_model,
            draft_k,
            code_prompt,
            chat_prompt,
            edit_prompt,
            decode,
            reps,
            json,
        } => bench_spec(BenchSpecArgs {
            common,
            draft_model,
            draft_k,
            code_prompt,
            chat_prompt,
            edit_prompt,
            decode,
            reps,
            json,
        }),
        Command::Bench {
            common,
            prefill,
            decode,
            depth,
            reps,
            json,
        } => bench(common, prefill, decode, depth, reps, json),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

fn model_path(model: Option<PathBuf>) -> Result<PathBuf, Box<dyn std::error::Error>> {
    match model {
        Some(p) => Ok(p),
        None => {
            let pb = spinner("locating the default model");
            let r = models::default_model(|m| pb.set_message(m.to_string()));
            pb.finish_and_clear();
            Ok(r?)
        }
    }
}

fn load(common: &ModelArgs) -> Result<Engine, Box<dyn std::error::Error>> {
    let path = model_path(common.model.clone())?;
    let pb = spinner(&format!("loading {}", path.display()));
    let t = Instant::now();
    let r = Engine::load_with(
        &path,
        EngineOptions {
            n_ctx: common.ctx_size,
            threads: common.threads,
            precision: common.precision,
            kv_precision: common.kv,
            spin_threads: !common.no_spin,
            backend: common.backend,
            ..Default::default()
        },
    );
    pb.finish_and_clear();
    let engine = r?;
    eprintln!(
        "loaded {} ({}) in {:.0} ms",
        path.display(),
        engine.weights().config.arch.name(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(engine)
}

fn info(path: &Path, as_json: bool) -> CliResult {
    let file = GgufFile::open(path).map_err(|source| EngineError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let config = ModelConfig::from_gguf(&file);
    let tensors: Vec<_> = file
        .tensors()
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ty.to_string(), "shape": t.dims, "bytes": t.n_bytes}))
        .collect();
    let tok = |k: &str| file.get(&format!("tokenizer.ggml.{k}")).cloned();
    let n_tokens = file
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map_or(0, |a| a.len());
    let tokenizer = json!({
        "model": tok("model").as_ref().and_then(|v| v.as_str().map(str::to_string)),
        "pre": tok("pre").as_ref().and_then(|v| v.as_str().map(str::to_string)),
        "n_tokens": n_tokens,
        "n_merges": file.get("tokenizer.ggml.merges").and_then(Value::as_array).map_or(0, |a| a.len()),
        "bos_token_id": tok("bos_token_id").and_then(|v| v.as_u64()),
        "eos_token_id": tok("eos_token_id").and_then(|v| v.as_u64()),
        "add_bos_token": tok("add_bos_token").and_then(|v| v.as_bool()),
        "add_eos_token": tok("add_eos_token").and_then(|v| v.as_bool()),
        "has_chat_template": file.get("tokenizer.chat_template").is_some(),
    });
    let hp = match &config {
        Ok(c) => json!({
            "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "n_head_kv": c.n_head_kv,
            "head_dim_k": c.head_dim_k, "head_dim_v": c.head_dim_v, "n_ff": c.n_ff, "n_vocab": c.n_vocab,
            "n_ctx_train": c.n_ctx_train, "rms_eps": c.rms_eps, "rope_base": c.rope_base, "n_rot": c.n_rot,
            "rope_style": format!("{:?}", c.rope_style), "rope_scaling": format!("{:?}", c.rope_scaling),
            "tied_embeddings": c.tied_embeddings, "sliding_window": c.sliding_window,
            "final_logit_softcap": c.final_logit_softcap, "attn_logit_softcap": c.attn_logit_softcap,
        }),
        Err(e) => json!({"error": e.to_string()}),
    };
    let total: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    if as_json {
        let v = json!({
            "file": path.display().to_string(),
            "gguf_version": file.version(),
            "architecture": file.get("general.architecture").and_then(Value::as_str),
            "name": file.get("general.name").and_then(Value::as_str),
            "file_size": file.file_size(),
            "alignment": file.alignment(),
            "data_offset": file.data_offset(),
            "n_metadata": file.metadata().len(),
            "hyperparameters": hp,
            "tokenizer": tokenizer,
            "tensor_bytes": total,
            "tensors": tensors,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "file:          {} ({} bytes, GGUF v{})",
        path.display(),
        file.file_size(),
        file.version()
    );
    println!(
        "architecture:  {}",
        file.get("general.architecture")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    println!(
        "name:          {}",
        file.get("general.name")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    println!("hyperparameters:");
    if let Some(obj) = hp.as_object() {
        for (k, v) in obj {
            println!("  {k:<20} {v}");
        }
    }
    println!("tokenizer:");
    if let Some(obj) = tokenizer.as_object() {
        for (k, v) in obj {
            println!("  {k:<20} {v}");
        }
    }
    println!(
        "tensors: {} ({:.1} MiB)",
        file.tensors().len(),
        total as f64 / (1024.0 * 1024.0)
    );
    for t in file.tensors() {
        println!(
            "  {:<36} {:<6} {:<22} {:>12}",
            t.name,
            t.ty.to_string(),
            format!("{:?}", t.dims),
            t.n_bytes
        );
    }
    Ok(())
}

fn tokenize(
    model: Option<PathBuf>,
    file: &Path,
    add_special: bool,
    parse_special: bool,
) -> CliResult {
    let path = model_path(model)?;
    let gguf = GgufFile::open(&path).map_err(|source| EngineError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let tok = Tokenizer::from_gguf(&gguf)?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let ids = tok.encode_bytes(&bytes, add_special, parse_special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

fn read_prompt(args: &GenerateArgs) -> Result<String, Box<dyn std::error::Error>> {
    match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(f)) => {
            let bytes =
                std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            String::from_utf8(bytes)
                .map_err(|_| format!("{} is not valid UTF-8", f.display()).into())
        }
        (None, None) => Err("give --prompt or --prompt-file".into()),
    }
}

fn generate(args: GenerateArgs) -> CliResult {
    let prompt = read_prompt(&args)?;
    let params = GenerateParams {
        max_new_tokens: args.n,
        sampling: args.sampling.params(),
        stop: args.sampling.stop.clone(),
        speculate: args.spec.params(),
        ..Default::default()
    };
    if params.max_new_tokens == 0 {
        return Err(EngineError::ZeroTokens.into());
    }
    let mut engine = load(&args.common)?;
    args.spec.load_into(&mut engine)?;
    params.sampling.validate(engine.weights().config.n_vocab)?;
    let prompt_ids = engine.tokenize(&prompt, params.add_special, params.parse_special);
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut stats = None;
    let stdout = std::io::stdout();
    for ev in engine.stream(&prompt, &params)? {
        match ev {
            Event::Token { id, text: t } => {
                ids.push(id);
                text.push_str(&t);
                if !args.json {
                    let mut out = stdout.lock();
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                }
            }
            Event::Done { reason, stats: s } => {
                stats = Some((reason, s));
            }
            Event::Logits { .. } => {}
        }
    }
    let (reason, s) = stats.ok_or(EngineError::Disconnected)?;
    if args.json {
        let v = json!({
            "prompt_ids": prompt_ids, "ids": ids, "text": text,
            "prefill_tok_s": s.prefill_tok_s(), "decode_tok_s": s.decode_tok_s(), "finish_reason": reason.as_str(),
            "n_drafted": s.n_drafted, "n_draft_accepted": s.n_draft_accepted,
        });
        println!("{v}");
    } else {
        println!();
    }
    eprintln!(
        "prompt {} tokens, {:.1} tok/s | generated {} tokens, {:.1} tok/s{} | stop: {}",
        s.n_prompt,
        s.prefill_tok_s(),
        s.n_generated,
        s.decode_tok_s(),
        spec_summary(&s),
        reason.as_str()
    );
    Ok(())
}

fn chat(
    common: ModelArgs,
    spec: SpecArgs,
    sampling: SamplingArgs,
    n: usize,
    system: Option<String>,
) -> CliResult {
    let mut engine = load(&common)?;
    spec.load_into(&mut engine)?;
    if engine.tokenizer().chat_template().is_none() {
        return Err(EngineError::NoChatTemplate.into());
    }
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(s) = system {
        history.push(ChatMessage {
            role: "system".into(),
            content: s,
        });
    }
    let params = GenerateParams {
        max_new_tokens: n,
        sampling: sampling.params(),
        stop: sampling.stop.clone(),
        add_special: false,
        parse_special: true,
        shared_prefix: None,
        speculate: spec.params(),
    };
    eprintln!("chat: type a message, an empty line or Ctrl-D ends");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        history.push(ChatMessage {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });
        let prompt = engine.render_chat(&history)?;
        let mut reply = String::new();
        let mut done = None;
        for ev in engine.stream(&prompt, &params)? {
            match ev {
                Event::Token { text, .. } => {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                    reply.push_str(&text);
                }
                Event::Done { stats, .. } => done = Some(stats),
                Event::Logits { .. } => {}
            }
        }
        println!();
        if let Some(s) = done {
            eprintln!(
                "[{} tokens, {:.1} tok/s{}]",
                s.n_generated,
                s.decode_tok_s(),
                spec_summary(&s)
            );
        }
        history.push(ChatMessage {
            role: "assistant".into(),
            content: reply,
        });
    }
    Ok(())
}

fn score(common: ModelArgs, ids_file: &Path, k: usize) -> CliResult {
    let text = std::fs::read_to_string(ids_file)
        .map_err(|e| format!("cannot read {}: {e}", ids_file.display()))?;
    let ids: Vec<u32> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a JSON array of token ids: {e}",
            ids_file.display()
        )
    })?;
    let mut engine = load(&common)?;
    let top = engine.score(&ids, k)?;
    let v: Vec<Vec<serde_json::Value>> = top
        .iter()
        .map(|row| row.iter().map(|(id, l)| json!([id, l])).collect())
        .collect();
    println!("{}", serde_json::to_string(&v)?);
    Ok(())
}

fn perplexity(common: ModelArgs, ctx: usize, file: &Path, as_json: bool) -> CliResult {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8", file.display()))?;
    let common = ModelArgs {
        ctx_size: common.ctx_size.max(ctx),
        ..common
    };
    let mut engine = load(&common)?;
    let t = Instant::now();
    let p = engine.perplexity(&text, ctx)?;
    if as_json {
        println!(
            "{}",
            json!({"perplexity": p.ppl, "chunks": p.chunks, "n_tokens": p.n_tokens, "n_ctx": ctx})
        );
    } else {
        println!(
            "perplexity: {:.4} over {} chunks of {ctx} ({} tokens)",
            p.ppl,
            p.chunks.len(),
            p.n_tokens
        );
    }
    eprintln!("{:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

fn bench(
    common: ModelArgs,
    pp: usize,
    tg: usize,
    depth: usize,
    reps: usize,
    as_json: bool,
) -> CliResult {
    if tg == 0 || pp == 0 {
        return Err(EngineError::ZeroTokens.into());
    }
    let common = ModelArgs {
        ctx_size: common.ctx_size.max(pp.max(depth) + tg + 2),
        ..common
    };
    let mut engine = load(&common)?;
    let n_vocab = engine.weights().config.n_vocab;
    // Never stop early: end-of-generation tokens are masked out.
    let logit_bias: Vec<(u32, f32)> = (0..n_vocab as u32)
        .filter(|&id| engine.tokenizer().is_eog(id))
        .map(|id| (id, f32::NEG_INFINITY))
        .collect();
    let params = |max_new_tokens| GenerateParams {
        max_new_tokens,
        sampling: SamplingParams {
            logit_bias: logit_bias.clone(),
            ..SamplingParams::greedy()
        },
        ..Default::default()
    };
    // Deterministic prompts of ordinary tokens.
    let tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|i| (100 + (i * 7919) % (n_vocab.min(20000) - 100)) as u32)
            .collect()
    };
    let (mut pf, mut dc) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        // Prefill alone (its one generated token is not timed as decode).
        let out = engine.generate_ids(tokens(pp), &params(1))?;
        pf.push(out.stats.prefill_tok_s());
        // Decode: the first token comes out of the prompt step, then `tg` timed steps.
        let out = engine.generate_ids(tokens(depth.max(1)), &params(tg + 1))?;
        dc.push(out.stats.decode_tok_s());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (p, d) = (mean(&pf), mean(&dc));
    if as_json {
        println!(
            "{}",
            json!({"prefill_tok_s": p, "decode_tok_s": d, "n_prompt": pp, "n_gen": tg, "depth": depth, "reps": reps.max(1)})
        );
    } else {
        let at = if depth > 0 {
            format!(" @ d{depth}")
        } else {
            String::new()
        };
        println!("pp{pp}: {p:.1} tok/s   tg{tg}{at}: {d:.1} tok/s");
    }
    Ok(())
}

struct BenchSpecArgs {
    common: ModelArgs,
    draft_model: Option<PathBuf>,
    draft_k: usize,
    code_prompt: PathBuf,
    chat_prompt: PathBuf,
    edit_prompt: PathBuf,
    decode: usize,
    reps: usize,
    json: bool,
}

fn bench_spec(a: BenchSpecArgs) -> CliResult {
    if a.decode == 0 {
        return Err(EngineError::ZeroTokens.into());
    }
    let mut engine = load(&a.common)?;
    if let Some(d) = &a.draft_model {
        engine.load_draft(d)?;
    }
    let read = |p: &Path| -> Result<String, Box<dyn std::error::Error>> {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()).into())
    };
    let code = read(&a.code_prompt)?;
    let as_chat = |text: String| -> Result<String, Box<dyn std::error::Error>> {
        if engine.tokenizer().chat_template().is_some() {
            Ok(engine.render_chat(&[ChatMessage {
                role: "user".into(),
                content: text.trim().to_string(),
            }])?)
        } else {
            Ok(text)
        }
    };
    let chat = as_chat(read(&a.chat_prompt)?)?;
    let edit = as_chat(read(&a.edit_prompt)?)?;
    let prompts = [
        ("code", code, true),
        ("chat", chat, false),
        ("edit", edit, false),
    ];
    let mut modes: Vec<(&str, Option<SpeculateParams>)> = vec![("alone", None)];
    if a.draft_model.is_some() {
        modes.push(("draft", Some(SpeculateParams::draft_model(a.draft_k))));
    }
    modes.push(("lookup", Some(SpeculateParams::lookup(a.draft_k))));
    let mut rows = Vec::new();
    for (pname, text, add_special) in &prompts {
        let ids = engine.tokenize(text, *add_special, true);
        // rates[mode] over reps; modes interleave within each rep so load changes hit all alike.
        let mut rates = vec![Vec::new(); modes.len()];
        let mut accept = vec![(0usize, 0usize); modes.len()];
        let mut reference: Option<Vec<u32>> = None;
        let mut identical = true;
        for _ in 0..a.reps.max(1) {
            for (mi, (_, spec)) in modes.iter().enumerate() {
                let params = GenerateParams {
                    max_new_tokens: a.decode,
                    sampling: SamplingParams::greedy(),
                    speculate: *spec,
                    ..Default::default()
                };
                let out = engine.generate_ids(ids.clone(), &params)?;
                match &reference {
                    None => reference = Some(out.ids.clone()),
                    Some(r) => identical &= *r == out.ids,
                }
                rates[mi].push(out.stats.decode_tok_s());
                accept[mi].0 += out.stats.n_draft_accepted;
                accept[mi].1 += out.stats.n_drafted;
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let base = median(&mut rates[0].clone());
        for (mi, (mname, _)) in modes.iter().enumerate() {
            let r = median(&mut rates[mi]);
            let acc = if accept[mi].1 > 0 {
                accept[mi].0 as f64 / accept[mi].1 as f64
            } else {
                0.0
            };
            rows.push(json!({
                "prompt": pname, "mode": mname, "n_prompt": ids.len(), "n_gen": a.decode,
                "decode_tok_s": r, "speedup": r / base, "acceptance": acc,
                "drafted": accept[mi].1, "accepted": accept[mi].0, "identical_ids": identical,
            }));
            if !a.json {
                println!(
                    "{pname:5} {mname:7} {r:7.2} tok/s  {:5.2}x  acceptance {:5.1}%  ({}/{} drafts){}",
                    r / base,
                    100.0 * acc,
                    accept[mi].0,
                    accept[mi].1,
                    if identical { "" } else { "  OUTPUT DIFFERS" }
                );
            }
        }
        if !identical {
            eprintln!("error: {pname}: speculative output differs from plain greedy output");
        }
    }
    if a.json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(())
}
