//! WGSL sources (`shaders/`, one file per kernel; the quantized kernels are a weight-type
//! decoder `quant_*.wgsl` followed by the kernel body).

use chord_resources::GgmlType;

use super::kernels::AttnParams;

pub const MATMUL_PARAMS: &str = include_str!("../../../shaders/matmul_params.wgsl");
pub const MATMUL_COMMON: &str = include_str!("../../../shaders/matmul_common.wgsl");
pub const MATVEC: &str = include_str!("../../../shaders/matvec.wgsl");
pub const MATVEC_STAGE: &str = include_str!("../../../shaders/matvec_stage.wgsl");
pub const MATVEC_PAIR: &str = include_str!("../../../shaders/matvec_pair.wgsl");
pub const MATVEC_REDUCE_TREE: &str = include_str!("../../../shaders/matvec_reduce_tree.wgsl");
pub const MATVEC_REDUCE_SUBGROUP: &str =
    include_str!("../../../shaders/matvec_reduce_subgroup.wgsl");
pub const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
pub const MATMUL_SUBGROUP: &str = include_str!("../../../shaders/matmul_subgroup.wgsl");
pub const MATMUL_TILED: &str = include_str!("../../../shaders/matmul_tiled.wgsl");
pub const GET_ROWS: &str = include_str!("../../../shaders/get_rows.wgsl");
pub const ROPE_STORE: &str = include_str!("../../../shaders/rope_store.wgsl");
pub const ATTENTION: &str = include_str!("../../../shaders/attention.wgsl");
pub const ATTN_MERGE: &str = include_str!("../../../shaders/attn_merge.wgsl");
pub const ARGMAX: &str = include_str!("../../../shaders/argmax.wgsl");
pub const TOPK: &str = include_str!("../../../shaders/topk.wgsl");

/// Header of the K/V-cache kernels (attention, rope_store) for an f32 or f16 cache.
pub fn kv_header(f16: bool) -> &'static str {
    if f16 {
        "enable f16;\nalias KvT = f16;\n"
    } else {
        "alias KvT = f32;\n"
    }
}

/// A K/V-cache kernel (`ATTENTION`, `ROPE_STORE`) for an f32 or f16 cache.
pub fn kv_module(body: &str, f16: bool) -> String {
    format!("{}{body}", kv_header(f16))
}

pub const ATTN_REDUCE_TREE: &str = include_str!("../../../shaders/attn_reduce_tree.wgsl");
pub const ATTN_REDUCE_SUBGROUP: &str = include_str!("../../../shaders/attn_reduce_subgroup.wgsl");

/// The attention kernel for an f32 or f16 cache, with subgroup or shared-memory reductions.
pub fn attention_module(f16: bool, subgroups: bool) -> String {
    let (reduce, params, init) = if subgroups {
        (
            ATTN_REDUCE_SUBGROUP,
            ", @builtin(subgroup_size) sg_size: u32",
            "SGS = sg_size;",
        )
    } else {
        (ATTN_REDUCE_TREE, "", "")
    };
    let body = ATTENTION
        .replace("/*SG_PARAMS*/", params)
        .replace("/*SG_INIT*/", init);
    format!("{}{reduce}\n{body}", kv_header(f16))
}

/// `src` with every `p.<field>` (not a longer name) replaced by `value`.
fn replace_field(src: &str, field: &str, value: &str) -> String {
    let pat = format!("p.{field}");
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find(&pat) {
        let after = &rest[i + pat.len()..];
        let longer = after
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        out.push_str(if longer { &pat } else { value });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// [`attention_module`] with a model's fixed parameters (head sizes, strides, scale, soft-cap,
/// RoPE dims, taken from `s`; the per-step and per-layer ones stay in the uniform) as constants:
/// the compiler then knows the head sizes (loop trip counts, the value layout's groups) and
/// strides.
pub fn attention_module_static(f16: bool, subgroups: bool, s: &AttnParams) -> String {
    let u = |v: u32| format!("({v}u)");
    // `{:?}` writes the shortest decimal that reads back as the same f32.
    let f = |v: f32| format!("({v:?}f)");
    let fields = [
        ("n_head", u(s.n_head)),
        ("n_head_kv", u(s.n_head_kv)),
        ("head_dim_k", u(s.head_dim_k)),
        ("head_dim_v", u(s.head_dim_v)),
        ("qkv_stride", u(s.qkv_stride)),
        ("out_stride", u(s.out_stride)),
        ("kv_stride", u(s.kv_stride)),
        ("k_dim", u(s.k_dim)),
        ("scale", f(s.scale)),
        ("softcap", f(s.softcap)),
        ("n_rot", u(s.n_rot)),
        ("neox", u(s.neox)),
    ];
    let mut src = attention_module(f16, subgroups);
    for (field, value) in fields {
        src = replace_field(&src, field, &value);
    }
    src
}

/// Weight types the GPU kernels decode.
pub const TYPES: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
];

/// The decoder of `ty`, if the GPU path has one.
pub fn quant_source(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => include_str!("../../../shaders/quant_f32.wgsl"),
        GgmlType::F16 => include_str!("../../../shaders/quant_f16.wgsl"),
        GgmlType::Q4_0 => include_str!("../../../shaders/quant_q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("../../../shaders/quant_q4_1.wgsl"),
        GgmlType::Q5_0 => include_str!("../../../shaders/quant_q5_0.wgsl"),
        GgmlType::Q8_0 => include_str!("../../../shaders/quant_q8_0.wgsl"),
        GgmlType::Q4K => include_str!("../../../shaders/quant_q4_k.wgsl"),
        GgmlType::Q6K => include_str!("../../../shaders/quant_q6_k.wgsl"),
        _ => return None,
    })
}

/// The decode matvec's block reader for `ty` (matvec_*.wgsl), if it has one.
pub fn matvec_source(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => include_str!("../../../shaders/matvec_f32.wgsl"),
        GgmlType::F16 => include_str!("../../../shaders/matvec_f16.wgsl"),
        GgmlType::Q4_0 => include_str!("../../../shaders/matvec_q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("../../../shaders/matvec_q4_1.wgsl"),
        GgmlType::Q5_0 => include_str!("../../../shaders/matvec_q5_0.wgsl"),
        GgmlType::Q8_0 => include_str!("../../../shaders/matvec_q8_0.wgsl"),
        GgmlType::Q4K => include_str!("../../../shaders/matvec_q4_k.wgsl"),
        GgmlType::Q6K => include_str!("../../../shaders/matvec_q6_k.wgsl"),
        _ => return None,
    })
}

/// The reduction file and the entry point's subgroup parameter / initialisation.
fn matvec_reduce(subgroups: bool) -> (&'static str, &'static str, &'static str) {
    if subgroups {
        (
            MATVEC_REDUCE_SUBGROUP,
            ", @builtin(subgroup_size) sg_size: u32",
            "SGS = sg_size;",
        )
    } else {
        (MATVEC_REDUCE_TREE, "", "")
    }
}

/// The decode matvec (matvec.wgsl) for `ty`, with subgroup or shared-memory sums.
pub fn matvec_module(ty: GgmlType, subgroups: bool) -> Option<String> {
    let q = matvec_source(ty)?;
    let (reduce, params, init) = matvec_reduce(subgroups);
    let body = MATVEC
        .replace("/*SG_PARAMS*/", params)
        .replace("/*SG_INIT*/", init);
    Some(format!(
        "{q}\n{MATMUL_PARAMS}\n{MATVEC_STAGE}\n{reduce}\n{body}"
    ))
}

/// Pairs of weight types the two-part matvec (matvec_pair.wgsl) takes: K-quants (same block
/// size, decoders with distinct helper names), as Q4_K_M files mix them in a fused QKV.
pub const MATVEC_PAIRS: [(GgmlType, GgmlType); 2] = [
    (GgmlType::Q4K, GgmlType::Q6K),
    (GgmlType::Q6K, GgmlType::Q4K),
];

/// `src` with every index into the weights `w[` (not a longer name ending in w) as `w_b[`.
fn rename_weights(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut prev: Option<char> = None;
    let mut chars = src.chars().peekable();
    while let Some(ch) = chars.next() {
        let ident = prev.is_some_and(|p| p.is_alphanumeric() || p == '_');
        if ch == 'w' && !ident && chars.peek() == Some(&'[') {
            out.push_str("w_b");
        } else {
            out.push(ch);
        }
        prev = Some(ch);
    }
    out
}

/// The two-part matvec for parts of types `a` then `b` (one of `MATVEC_PAIRS`): `b`'s decoder
/// renamed (`w_b` at binding 7, `block_dot_b`, `BW_B`, `LPB_B`).
pub fn matvec_pair_module(a: GgmlType, b: GgmlType, subgroups: bool) -> Option<String> {
    if !MATVEC_PAIRS.contains(&(a, b)) {
        return None;
    }
    let qa = matvec_source(a)?;
    let qb = rename_weights(matvec_source(b)?)
        .replace(
            "@group(0) @binding(1) var<storage, read> w:",
            "@group(0) @binding(7) var<storage, read> w_b:",
        )
        .replace("fn block_dot(", "fn block_dot_b(")
        .replace("const BW: u32", "const BW_B: u32")
        .replace("const LPB: u32", "const LPB_B: u32");
    let (reduce, params, init) = matvec_reduce(subgroups);
    let body = MATVEC_PAIR
        .replace("/*SG_PARAMS*/", params)
        .replace("/*SG_INIT*/", init);
    Some(format!(
        "{qa}\n{qb}\n{MATMUL_PARAMS}\n{MATVEC_STAGE}\n{reduce}\n{body}"
    ))
}

/// The decode matvec of `ty`, or with `pair` the two-part matvec of `ty` then `pair`.
pub fn matvec_module_of(ty: GgmlType, pair: Option<GgmlType>, subgroups: bool) -> Option<String> {
    match pair {
        Some(b) => matvec_pair_module(ty, b, subgroups),
        None => matvec_module(ty, subgroups),
    }
}

/// Fixed attention parameters for the modules' validation (qwen2.5-1.5B's).
fn test_statics() -> AttnParams {
    AttnParams {
        n_head: 12,
        n_head_kv: 2,
        head_dim_k: 128,
        head_dim_v: 128,
        qkv_stride: 2048,
        out_stride: 1536,
        kv_stride: 512,
        k_dim: 256,
        scale: 0.088_388_35,
        n_rot: 128,
        neox: 1,
        ..Default::default()
    }
}

/// Every complete shader module: (name, source).
pub fn all_modules() -> Vec<(String, String)> {
    let mut v = vec![
        ("rope_store".to_string(), kv_module(ROPE_STORE, false)),
        ("attention".to_string(), attention_module(false, false)),
        (
            "attention_subgroup".to_string(),
            attention_module(false, true),
        ),
        (
            "attention_f16_subgroup".to_string(),
            attention_module(true, true),
        ),
        ("rope_store_f16".to_string(), kv_module(ROPE_STORE, true)),
        ("attention_f16".to_string(), attention_module(true, false)),
        ("attn_merge".to_string(), ATTN_MERGE.to_string()),
        (
            "attention_static_f16_subgroup".to_string(),
            attention_module_static(true, true, &test_statics()),
        ),
        (
            "attention_static".to_string(),
            attention_module_static(false, false, &test_statics()),
        ),
        ("argmax".to_string(), ARGMAX.to_string()),
        ("topk".to_string(), TOPK.to_string()),
    ];
    for ty in TYPES {
        if let Some(q) = quant_source(ty) {
            v.push((format!("matmul_{ty}"), matmul_module(q, MATMUL)));
            v.push((format!("get_rows_{ty}"), format!("{q}\n{GET_ROWS}")));
            v.push((format!("matmul_subgroup_{ty}"), subgroup_matmul(q)));
            for tile in TILES {
                v.push((format!("matmul_tiled{tile}_{ty}"), tiled_module(q, tile)));
            }
        }
        for sg in [false, true] {
            if let Some(src) = matvec_module(ty, sg) {
                v.push((format!("matvec_{ty}_sg{}", sg as u8), src));
            }
        }
    }
    for (a, b) in MATVEC_PAIRS {
        for sg in [false, true] {
            if let Some(src) = matvec_pair_module(a, b, sg) {
                v.push((format!("matvec_pair_{a}_{b}_sg{}", sg as u8), src));
            }
        }
    }
    v
}

/// The subgroup matmul for the decoder `q`. (naga 30 takes the subgroup builtins with the
/// device's SUBGROUP feature and rejects the standard `enable subgroups;` directive.)
pub fn subgroup_matmul(q: &str) -> String {
    matmul_module(q, MATMUL_SUBGROUP)
}

/// Tile sizes of the tiled matmul (output features × activation rows a workgroup computes):
/// `kernels::tiled_choice` picks one per product.
pub const TILES: [u32; 2] = [64, 128];

/// The tiled matmul for the decoder `q` with `tile × tile` outputs per workgroup.
pub fn tiled_module(q: &str, tile: u32) -> String {
    format!("{q}\n{MATMUL_PARAMS}\n{MATMUL_COMMON}\nconst BT: u32 = {tile}u;\n{MATMUL_TILED}")
}

/// A matmul kernel module: the weight decoder `q`, the shared parameters, input modes and chunk
/// dot product, and the kernel `body` (`MATMUL`, `MATMUL_SUBGROUP` or `MATMUL_TILED`).
pub fn matmul_module(q: &str, body: &str) -> String {
    format!("{q}\n{MATMUL_PARAMS}\n{MATMUL_COMMON}\n{body}")
}
