//! Causal multi-head attention over a sequence's KV cache, read in place.

use half::f16;

use super::parallel;
use crate::components::KvView;

/// A cache element that reads as f32.
trait KvElem: Copy + Sync {
    fn get(self) -> f32;
}

impl KvElem for f32 {
    #[inline]
    fn get(self) -> f32 {
        self
    }
}

impl KvElem for f16 {
    #[inline]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

#[inline]
fn dot_kv<T: KvElem>(q: &[f32], k: &[T]) -> f32 {
    q.iter().zip(k).map(|(a, b)| a * b.get()).sum()
}

#[inline]
fn axpy_kv<T: KvElem>(y: &mut [f32], a: f32, x: &[T]) {
    y.iter_mut().zip(x).for_each(|(yi, xi)| *yi += a * xi.get());
}

/// Geometry of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub scale: f32,
    /// Keys at positions `t` with `p - t >= window` are hidden from a query at `p`.
    pub window: Option<usize>,
    /// gemma2-style `tanh` soft-capping of scores.
    pub softcap: Option<f32>,
}

/// For each query row `r` at position `positions[r]`, attend over cached keys `0..=positions[r]`.
///
/// - `q`: `[n_rows × n_head × head_dim_k]`
/// - `k_cache`: `[n_cached × n_head_kv × head_dim_k]`, `v_cache`: `[n_cached × n_head_kv × head_dim_v]`
///   (the rows of this step are already written)
/// - `out`: `[n_rows × n_head × head_dim_v]`
pub fn attention(
    q: &[f32],
    positions: &[usize],
    k_cache: KvView<'_>,
    v_cache: KvView<'_>,
    s: AttentionShape,
    out: &mut [f32],
) {
    match (k_cache, v_cache) {
        (KvView::F32(k), KvView::F32(v)) => attention_f32(q, positions, k, v, s, out),
        (KvView::F16(k), KvView::F16(v)) => attention_generic(q, positions, k, v, s, out),
        (KvView::F32(k), KvView::F16(v)) => attention_generic(q, positions, k, v, s, out),
        (KvView::F16(k), KvView::F32(v)) => attention_generic(q, positions, k, v, s, out),
    }
}

/// f16 (or mixed) caches: converted element by element.
fn attention_generic<K: KvElem, V: KvElem>(
    q: &[f32],
    positions: &[usize],
    k_cache: &[K],
    v_cache: &[V],
    s: AttentionShape,
    out: &mut [f32],
) {
    attention_impl(q, positions, s, out, |h: Head<'_>, o: &mut [f32]| {
        attend_head(h, k_cache, v_cache, &s, o, dot_kv::<K>, axpy_kv::<V>)
    })
}

/// f32 caches: the vectorised f32 dot and axpy, inlined into a per-head loop compiled for AVX2
/// where the CPU has it (one call per head instead of two per cached position; the sums are
/// the same code, so the same bits).
fn attention_f32(
    q: &[f32],
    positions: &[usize],
    k_cache: &[f32],
    v_cache: &[f32],
    s: AttentionShape,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        attention_impl(q, positions, s, out, |h: Head<'_>, o: &mut [f32]| {
            // SAFETY: AVX2 was just detected.
            unsafe { attend_head_f32_avx2(h, k_cache, v_cache, &s, o) }
        });
        return;
    }
    attention_impl(q, positions, s, out, |h: Head<'_>, o: &mut [f32]| {
        attend_head(
            h,
            k_cache,
            v_cache,
            &s,
            o,
            super::dot_portable,
            super::axpy_portable,
        )
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_head_f32_avx2(
    h: Head<'_>,
    k_cache: &[f32],
    v_cache: &[f32],
    s: &AttentionShape,
    o: &mut [f32],
) {
    attend_head(
        h,
        k_cache,
        v_cache,
        s,
        o,
        super::dot_portable,
        super::axpy_portable,
    )
}

/// One query head of one row: its query, the KV head it reads and the visible positions.
#[derive(Clone, Copy)]
struct Head<'a> {
    q: &'a [f32],
    kvh: usize,
    first: usize,
    p: usize,
}

/// Scores over the visible keys, softmax, and the weighted sum of values into `o`.
#[inline(always)]
fn attend_head<K, V>(
    h: Head<'_>,
    k_cache: &[K],
    v_cache: &[V],
    s: &AttentionShape,
    o: &mut [f32],
    dot: impl Fn(&[f32], &[K]) -> f32,
    axpy: impl Fn(&mut [f32], f32, &[V]),
) {
    let kv_stride_k = s.n_head_kv * s.head_dim_k;
    let kv_stride_v = s.n_head_kv * s.head_dim_v;
    let mut scores: Vec<f32> = (h.first..=h.p)
        .map(|t| {
            let kt = &k_cache[t * kv_stride_k + h.kvh * s.head_dim_k..][..s.head_dim_k];
            let mut sc = dot(h.q, kt) * s.scale;
            if let Some(c) = s.softcap {
                sc = c * (sc / c).tanh();
            }
            sc
        })
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for sc in scores.iter_mut() {
        *sc = (*sc - max).exp();
        sum += *sc;
    }
    let inv = 1.0 / sum;
    o.fill(0.0);
    for (i, t) in (h.first..=h.p).enumerate() {
        let vt = &v_cache[t * kv_stride_v + h.kvh * s.head_dim_v..][..s.head_dim_v];
        axpy(o, scores[i] * inv, vt);
    }
}

/// Split the (row, head) pairs across threads; `head` fills one pair's output.
fn attention_impl(
    q: &[f32],
    positions: &[usize],
    s: AttentionShape,
    out: &mut [f32],
    head: impl Fn(Head<'_>, &mut [f32]) + Sync,
) {
    let group = s.n_head / s.n_head_kv;
    let cost = positions.iter().max().map_or(1, |p| p + 1) * (s.head_dim_k + s.head_dim_v);
    parallel::for_chunks_mut(out, s.head_dim_v, cost, |idx, o| {
        let (r, h) = (idx / s.n_head, idx % s.n_head);
        let p = positions[r];
        let first = match s.window {
            Some(w) => (p + 1).saturating_sub(w),
            None => 0,
        };
        let q_head = &q[(r * s.n_head + h) * s.head_dim_k..][..s.head_dim_k];
        head(
            Head {
                q: q_head,
                kvh: h / group,
                first,
                p,
            },
            o,
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_returns_its_value_and_window_hides_old_keys() {
        let shape = AttentionShape {
            n_head: 2,
            n_head_kv: 1,
            head_dim_k: 2,
            head_dim_v: 2,
            scale: 1.0,
            window: None,
            softcap: None,
        };
        let (k, v) = (&[1.0, 0.0, 0.0, 1.0][..], &[10.0, 20.0, 30.0, 40.0][..]);
        let (k, v) = (KvView::F32(k), KvView::F32(v));
        let q = [1.0, 0.0, 0.0, 1.0];
        let mut out = [0.0; 4];
        attention(&q, &[0], k, v, shape, &mut out);
        assert_eq!(out, [10.0, 20.0, 10.0, 20.0]);
        // Position 1 with window 1 sees only key 1.
        attention(
            &q,
            &[1],
            k,
            v,
            AttentionShape {
                window: Some(1),
                ..shape
            },
            &mut out,
        );
        assert_eq!(out, [30.0, 40.0, 30.0, 40.0]);
        // Without a window both keys contribute, weighted by softmax of the scores.
        attention(&q, &[1], k, v, shape, &mut out);
        let w1 = 1.0f32.exp() / (1.0f32.exp() + 1.0);
        assert!((out[0] - (10.0 * w1 + 30.0 * (1.0 - w1))).abs() < 1e-4);
        // An f16 cache gives the same answer (these values are exact in f16).
        let kh: Vec<f16> = [1.0f32, 0.0, 0.0, 1.0]
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        let vh: Vec<f16> = [10.0f32, 20.0, 30.0, 40.0]
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        let mut out16 = [0.0; 4];
        attention(
            &q,
            &[1],
            KvView::F16(&kh),
            KvView::F16(&vh),
            shape,
            &mut out16,
        );
        for (a, b) in out.iter().zip(&out16) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
