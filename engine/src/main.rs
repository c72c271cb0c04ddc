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
    KvPrecision, SamplingParams, models,
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
    /// Prefill and decode speed, llama-bench style.
    Bench {
        #[command(flatten)]
        common: ModelArgs,
        #[arg(short = 'p', default_value_t = 512)]
        prefill: usize,
        #[arg(short = 'n', default_value_t = 128)]
        decode: usize,
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

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    common: ModelArgs,
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
            sampling,
            n,
            system,
        } => chat(common, sampling, n, system),
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
        Command::Bench {
            common,
            prefill,
            decode,
            reps,
            json,
        } => bench(common, prefill, decode, reps, json),
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
        ..Default::default()
    };
    if params.max_new_tokens == 0 {
        return Err(EngineError::ZeroTokens.into());
    }
    let mut engine = load(&args.common)?;
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
        });
        println!("{v}");
    } else {
        println!();
    }
    eprintln!(
        "prompt {} tokens, {:.1} tok/s | generated {} tokens, {:.1} tok/s | stop: {}",
        s.n_prompt,
        s.prefill_tok_s(),
        s.n_generated,
        s.decode_tok_s(),
        reason.as_str()
    );
    Ok(())
}

fn chat(common: ModelArgs, sampling: SamplingArgs, n: usize, system: Option<String>) -> CliResult {
    let mut engine = load(&common)?;
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
            eprintln!("[{} tokens, {:.1} tok/s]", s.n_generated, s.decode_tok_s());
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

fn bench(common: ModelArgs, pp: usize, tg: usize, reps: usize, as_json: bool) -> CliResult {
    if tg == 0 || pp == 0 {
        return Err(EngineError::ZeroTokens.into());
    }
    let common = ModelArgs {
        ctx_size: common.ctx_size.max(pp + tg + 1),
        ..common
    };
    let mut engine = load(&common)?;
    let n_vocab = engine.weights().config.n_vocab;
    // Never stop early: end-of-generation tokens are masked out.
    let logit_bias: Vec<(u32, f32)> = (0..n_vocab as u32)
        .filter(|&id| engine.tokenizer().is_eog(id))
        .map(|id| (id, f32::NEG_INFINITY))
        .collect();
    let params = GenerateParams {
        max_new_tokens: tg,
        sampling: SamplingParams {
            logit_bias,
            ..SamplingParams::greedy()
        },
        ..Default::default()
    };
    // A deterministic prompt of ordinary tokens.
    let prompt: Vec<u32> = (0..pp)
        .map(|i| (100 + (i * 7919) % (n_vocab.min(20000) - 100)) as u32)
        .collect();
    let (mut pf, mut dc) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let out = engine.generate_ids(prompt.clone(), &params)?;
        pf.push(out.stats.prefill_tok_s());
        dc.push(out.stats.decode_tok_s());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (p, d) = (mean(&pf), mean(&dc));
    if as_json {
        println!(
            "{}",
            json!({"prefill_tok_s": p, "decode_tok_s": d, "n_prompt": pp, "n_gen": tg, "reps": reps.max(1)})
        );
    } else {
        println!("pp{pp}: {p:.1} tok/s   tg{tg}: {d:.1} tok/s");
    }
    Ok(())
}
