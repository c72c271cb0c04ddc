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
        let same_dims = s.head_dim_k == s.head_dim_v && s.softcap.is_none() && x86::detected();

        let blocked: Option<F32HeadFn> = match s.head_dim_k {
            64 if same_dims => Some(x86::attend_head_blocked::<8>),
            128 if same_dims => Some(x86::attend_head_blocked::<16>),
            _ => None,
        };
        if let Some(f) = blocked {
            attention_impl(q, positions, s, out, |h: Head<'_>, o: &mut [f32]| {
                f(h, k_cache, v_cache, &s, o)
            });
            return;
        }
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

/// The f32 head loop of [`attend_head`] with [`super::dot_portable`] and
/// [`super::axpy_portable`], rewritten for AVX2: each key's dot keeps its eight lane sums in
/// chunk order and adds them up lane 0 to 7 (the portable scores, bit for bit); eight keys are
/// done at once and their lane sums transposed, so the eight additions become seven vector
/// adds; the softmax takes its exponentials eight at a time ([`crate::kernels::vexp`], within
/// 2 ulp of `expf`, which cost a call per score) with lane-wise partial sums; the output
/// accumulates in registers, `o + a·v` per key in key order as `axpy` does. Every row and
/// head of a model takes this loop (the choice depends on the head size and cache type
/// only), so batching never changes a result.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{AttentionShape, Head};

    /// Eight f32 at `x[off..off + 8]` (panics when out of bounds).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load8(x: &[f32], off: usize) -> __m256 {
        let Some(v) = x.get(off..).and_then(|t| t.first_chunk::<8>()) else {
            panic!("attention: 8 floats at {off} outside {}", x.len())
        };
        // SAFETY: `v` is 8 readable f32; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn store8(x: &mut [f32; 8], v: __m256) {
        // SAFETY: `x` is 8 writable f32; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) }
    }

    /// `out[i]` lane `j` = `v[j]` lane `i`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(v[0], v[1]);
        let t1 = _mm256_unpackhi_ps(v[0], v[1]);
        let t2 = _mm256_unpacklo_ps(v[2], v[3]);
        let t3 = _mm256_unpackhi_ps(v[2], v[3]);
        let t4 = _mm256_unpacklo_ps(v[4], v[5]);
        let t5 = _mm256_unpackhi_ps(v[4], v[5]);
        let t6 = _mm256_unpacklo_ps(v[6], v[7]);
        let t7 = _mm256_unpackhi_ps(v[6], v[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// `Σ_c q_c·k_c` per lane, chunks in order, from zero: `dot_portable`'s eight lane sums.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn lane_sums<const D8: usize>(q: &[__m256; D8], k: &[f32], off: usize) -> __m256 {
        let key = chunks8::<D8>(k, off);
        let mut a = _mm256_setzero_ps();
        for (qc, kc) in q.iter().zip(key) {
            a = _mm256_add_ps(a, _mm256_mul_ps(*qc, load8(kc, 0)));
        }
        a
    }

    /// The `D8` chunks of 8 f32 at `x[off..]` (one bounds check for the whole head).
    #[inline(always)]
    fn chunks8<const D8: usize>(x: &[f32], off: usize) -> &[[f32; 8]; D8] {
        let Some(v) = x
            .get(off..off + 8 * D8)
            .and_then(|t| t.as_chunks::<8>().0.first_chunk::<D8>())
        else {
            panic!("attention: {} floats at {off} outside {}", 8 * D8, x.len())
        };
        v
    }

    /// Whether this CPU runs [`attend_head_blocked`].
    pub(super) fn detected() -> bool {
        crate::kernels::vexp::detected()
    }

    /// [`super::attend_head`] for f32 caches, `head_dim_k == head_dim_v == 8·D8`, no
    /// soft-capping; same bits (see the module docs). Panics if AVX2 is missing.
    pub(super) fn attend_head_blocked<const D8: usize>(
        h: Head<'_>,
        k_cache: &[f32],
        v_cache: &[f32],
        s: &AttentionShape,
        o: &mut [f32],
    ) {
        assert!(detected(), "attention: AVX2 head loop without AVX2/FMA");
        // SAFETY: AVX2 and FMA were just detected; all memory access is bounds-checked.
        unsafe { blocked::<D8>(h, k_cache, v_cache, s, o) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn blocked<const D8: usize>(
        h: Head<'_>,
        k_cache: &[f32],
        v_cache: &[f32],
        s: &AttentionShape,
        o: &mut [f32],
    ) {
        let d = 8 * D8;
        let stride = s.n_head_kv * d;
        let base = h.kvh * d;
        let q: [__m256; D8] = std::array::from_fn(|c| load8(h.q, 8 * c));
        let n = h.p + 1 - h.first;
        let mut scores = vec![0.0f32; n.next_multiple_of(8)];
        let scale = _mm256_set1_ps(s.scale);
        let (blocks, _) = scores.as_chunks_mut::<8>();
        for (b, out) in blocks.iter_mut().enumerate() {
            let t0 = h.first + 8 * b;
            if t0 + 8 <= h.p + 1 {
                let sums: [__m256; 8] =
                    std::array::from_fn(|j| lane_sums(&q, k_cache, (t0 + j) * stride + base));
                let tr = transpose8(sums);
                let mut total = tr[0];
                for v in &tr[1..] {
                    total = _mm256_add_ps(total, *v);
                }
                store8(out, _mm256_mul_ps(total, scale));
            } else {
                for (j, sc) in out.iter_mut().enumerate().take(h.p + 1 - t0) {
                    let mut lanes = [0.0f32; 8];
                    store8(&mut lanes, lane_sums(&q, k_cache, (t0 + j) * stride + base));
                    *sc = lanes.iter().sum::<f32>() * s.scale;
                }
            }
        }
        // Softmax with vector max, exp and partial sums (padding lanes are −∞ → 0).
        let scores = &mut scores[..n];
        let (chunks, rest) = scores.as_chunks_mut::<8>();
        let mut tail = [f32::NEG_INFINITY; 8];
        tail[..rest.len()].copy_from_slice(rest);
        let mut maxv = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in chunks.iter().chain(std::iter::once(&tail)) {
            maxv = _mm256_max_ps(maxv, load8(c, 0));
        }
        let mut lanes = [0.0f32; 8];
        store8(&mut lanes, maxv);
        let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let maxv = _mm256_set1_ps(max);
        let mut sumv = _mm256_setzero_ps();
        for c in chunks.iter_mut() {
            let e = crate::kernels::vexp::exp8(_mm256_sub_ps(load8(c, 0), maxv));
            sumv = _mm256_add_ps(sumv, e);
            store8(c, e);
        }
        let e = crate::kernels::vexp::exp8(_mm256_sub_ps(load8(&tail, 0), maxv));
        sumv = _mm256_add_ps(sumv, e);
        store8(&mut tail, e);
        rest.copy_from_slice(&tail[..rest.len()]);
        store8(&mut lanes, sumv);
        let sum: f32 = lanes.iter().sum();
        let inv = 1.0 / sum;
        let mut acc = [_mm256_setzero_ps(); D8];
        for (i, &sc) in scores.iter().enumerate() {
            let a = _mm256_set1_ps(sc * inv);
            let value = chunks8::<D8>(v_cache, (h.first + i) * stride + base);
            for (acc_c, vc) in acc.iter_mut().zip(value) {
                *acc_c = _mm256_add_ps(*acc_c, _mm256_mul_ps(a, load8(vc, 0)));
            }
        }
        let (chunks, _) = o.as_chunks_mut::<8>();
        for (chunk, v) in chunks.iter_mut().zip(acc) {
            store8(chunk, v);
        }
    }
}

/// A per-head loop over f32 caches: `(head, k_cache, v_cache, shape, out)`.
#[cfg(target_arch = "x86_64")]
type F32HeadFn = fn(Head<'_>, &[f32], &[f32], &AttentionShape, &mut [f32]);

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
    fn blocked_head_loop_matches_the_portable_loop() {
        // The AVX2 head loop against the portable loop, for every key count around the 8-key
        // blocks and both head sizes it serves: the scores are the same bits, the vector
        // exponentials within 2 ulp of expf, so outputs agree to a few ulp.
        #[cfg(target_arch = "x86_64")]
        for d in [64usize, 128] {
            if !x86::detected() {
                break;
            }
            let n_kv = 2;
            let cached = 45;
            let val = |i: usize| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 3.0;
            let k: Vec<f32> = (0..cached * n_kv * d).map(val).collect();
            let v: Vec<f32> = (0..cached * n_kv * d).map(|i| val(i + 17)).collect();
            let q: Vec<f32> = (0..d).map(|i| val(i * 3 + 5)).collect();
            let s = AttentionShape {
                n_head: 4,
                n_head_kv: n_kv,
                head_dim_k: d,
                head_dim_v: d,
                scale: 0.125,
                window: None,
                softcap: None,
            };
            for (first, p) in [(0, 0), (0, 7), (0, 8), (3, 20), (0, 44), (9, 44)] {
                let h = Head {
                    q: &q,
                    kvh: 1,
                    first,
                    p,
                };
                let mut want = vec![0.0f32; d];
                attend_head(
                    h,
                    &k,
                    &v,
                    &s,
                    &mut want,
                    super::super::dot_portable,
                    super::super::axpy_portable,
                );
                let mut got = vec![f32::NAN; d];
                match d {
                    64 => x86::attend_head_blocked::<8>(h, &k, &v, &s, &mut got),
                    _ => x86::attend_head_blocked::<16>(h, &k, &v, &s, &mut got),
                }
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "d {d} keys {first}..={p}: {g} vs {w}"
                    );
                }
            }
        }
    }

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
