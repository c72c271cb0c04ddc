//! Token sampling: penalties, logit bias, top-k, top-p, min-p, temperature, seeded draw.
//!
//! The order follows llama.cpp's default sampler chain (penalties → top-k → top-p → min-p →
//! temperature → distribution). `temperature <= 0` is greedy: the highest logit, ties going to
//! the lowest id.

use rand_core::Rng;

/// Sampling parameters of one request. [`SamplingParams::validate`] rejects nonsense.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = disabled.
    pub top_k: usize,
    /// 1.0 = disabled.
    pub top_p: f32,
    /// 0.0 = disabled.
    pub min_p: f32,
    /// 1.0 = disabled. Divides positive logits (multiplies negative ones) of recent tokens.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at (0 = none, as llama.cpp's `penalty_last_n`).
    pub penalty_last_n: usize,
    /// Added to the logits of the given ids before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0x5EED,
        }
    }
}

/// A sampling parameter out of range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid sampling parameter {name} = {value}: {why}")]
pub struct InvalidParam {
    pub name: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl SamplingParams {
    /// Greedy decoding (argmax, ties to the lowest id).
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    pub fn validate(&self, n_vocab: usize) -> Result<(), InvalidParam> {
        let bad = |name, value: f32, why| {
            Err(InvalidParam {
                name,
                value: value.to_string(),
                why,
            })
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature", self.temperature, "must be finite and >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "must be in [0, 1]");
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(
                "repeat_penalty",
                self.repeat_penalty,
                "must be finite and > 0",
            );
        }
        if !self.frequency_penalty.is_finite() {
            return bad(
                "frequency_penalty",
                self.frequency_penalty,
                "must be finite",
            );
        }
        if !self.presence_penalty.is_finite() {
            return bad("presence_penalty", self.presence_penalty, "must be finite");
        }
        for &(id, b) in &self.logit_bias {
            if id as usize >= n_vocab {
                return Err(InvalidParam {
                    name: "logit_bias",
                    value: id.to_string(),
                    why: "token id out of vocabulary",
                });
            }
            if b.is_nan() {
                return bad("logit_bias", b, "is NaN");
            }
        }
        Ok(())
    }
}

/// Index of the largest value; ties go to the lowest index. NaNs are never chosen.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Apply repetition/frequency/presence penalties for the last `penalty_last_n` of `history`,
/// then the logit bias (in place).
pub fn apply_penalties(logits: &mut [f32], history: &[u32], p: &SamplingParams) {
    if p.penalty_last_n > 0
        && (p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0)
    {
        let window = &history[history.len().saturating_sub(p.penalty_last_n)..];
        let mut counts: Vec<(u32, u32)> = Vec::new();
        for &t in window {
            match counts.iter_mut().find(|(id, _)| *id == t) {
                Some((_, c)) => *c += 1,
                None => counts.push((t, 1)),
            }
        }
        for (id, count) in counts {
            let Some(l) = logits.get_mut(id as usize) else {
                continue;
            };
            // llama.cpp (llama_sampler_penalties_apply): divide positive, multiply negative.
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
            *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
    for &(id, b) in &p.logit_bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += b;
        }
    }
}

/// Choose the next token from `logits` (modified in place by penalties).
pub fn sample(logits: &mut [f32], history: &[u32], p: &SamplingParams, rng: &mut impl Rng) -> u32 {
    let dist = distribution(logits, history, p);
    if p.temperature <= 0.0 {
        // Greedy draws no random number (a seed only matters when sampling).
        return dist.first().map_or(0, |c| c.0);
    }
    draw(&dist, rng)
}

/// The distribution [`sample`] draws from: candidate ids with their probabilities (summing to
/// 1), most likely first. Greedy (`temperature <= 0`) is the point mass on the argmax. Empty
/// only when every logit is NaN. `logits` are modified in place by penalties.
pub fn distribution(logits: &mut [f32], history: &[u32], p: &SamplingParams) -> Vec<(u32, f32)> {
    apply_penalties(logits, history, p);
    if p.temperature <= 0.0 {
        return vec![(argmax(logits), 1.0)];
    }
    // Candidates sorted by logit (descending; ties by id).
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan())
        .map(|(i, &l)| (i as u32, l))
        .collect();
    if cand.is_empty() {
        return cand;
    }
    let k = if p.top_k == 0 {
        cand.len()
    } else {
        p.top_k.min(cand.len())
    };
    if k < cand.len() {
        cand.select_nth_unstable_by(k - 1, cmp_desc);
        cand.truncate(k);
    }
    cand.sort_unstable_by(cmp_desc);

    // top-p over the softmax of the remaining candidates (temperature 1, as llama.cpp does).
    if p.top_p < 1.0 {
        let probs = softmax(&cand, 1.0);
        let mut cum = 0.0;
        let mut keep = cand.len();
        for (i, pr) in probs.iter().enumerate() {
            cum += pr;
            if cum >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        cand.truncate(keep.max(1));
    }
    // min-p: drop tokens whose probability is below min_p × the best one's.
    if p.min_p > 0.0 {
        let max_l = cand[0].1;
        let threshold = max_l + p.min_p.ln();
        cand.retain(|&(_, l)| l >= threshold);
    }
    let probs = softmax(&cand, p.temperature);
    cand.iter().zip(probs).map(|(c, pr)| (c.0, pr)).collect()
}

/// Draw one id from `dist` (one random number; `dist` as [`distribution`] returns it, or any
/// weights summing to about 1). Empty → 0.
pub fn draw(dist: &[(u32, f32)], rng: &mut impl Rng) -> u32 {
    let u = unit(rng);
    let mut cum = 0.0f64;
    for &(id, pr) in dist {
        cum += pr as f64;
        if u < cum {
            return id;
        }
    }
    dist.last().map_or(0, |c| c.0)
}

/// A uniform number in [0, 1) from 53 random bits.
pub fn unit(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Probability of `id` under `dist` (0 when it is not a candidate).
pub fn prob_of(dist: &[(u32, f32)], id: u32) -> f32 {
    dist.iter().find(|c| c.0 == id).map_or(0.0, |c| c.1)
}

fn cmp_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn softmax(cand: &[(u32, f32)], temperature: f32) -> Vec<f32> {
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let mut e: Vec<f32> = cand
        .iter()
        .map(|c| ((c.1 - max) / temperature).exp())
        .collect();
    let sum: f32 = e.iter().sum();
    e.iter_mut().for_each(|v| *v /= sum);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    #[test]
    fn greedy_ties_go_to_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut l = vec![0.0, 5.0, 5.0];
        assert_eq!(sample(&mut l, &[], &SamplingParams::greedy(), &mut rng), 1);
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        let p = SamplingParams {
            repeat_penalty: 2.0,
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            logit_bias: vec![(3, -10.0)],
            ..SamplingParams::greedy()
        };
        let mut l = vec![4.0, -4.0, 1.0, 9.0];
        apply_penalties(&mut l, &[0, 0, 1], &p);
        assert_eq!(
            l,
            vec![4.0 / 2.0 - 1.0 - 0.25, -8.0 - 0.5 - 0.25, 1.0, -1.0]
        );
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        let mut l = vec![0.1, 0.3, 0.2];
        assert_eq!(sample(&mut l, &[], &p, &mut rng), 1);

        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&mut logits.clone(), &[], &p, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn sampling_frequencies_follow_softmax() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let logits = [0.0f32, 1.0, 2.0];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut counts = [0usize; 3];
        let n = 20000;
        for _ in 0..n {
            counts[sample(&mut logits.to_vec(), &[], &p, &mut rng) as usize] += 1;
        }
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for i in 0..3 {
            let expect = logits[i].exp() / z;
            let got = counts[i] as f32 / n as f32;
            assert!((got - expect).abs() < 0.015, "{i}: {got} vs {expect}");
        }
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        };
        // Token 1 has probability e^-3 relative to token 0: below min_p, never drawn.
        for _ in 0..200 {
            assert_eq!(sample(&mut [3.0, 0.0], &[], &p, &mut rng), 0);
        }
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            ..Default::default()
        };
        for _ in 0..200 {
            assert_eq!(sample(&mut [0.0, 3.0, 0.0], &[], &p, &mut rng), 1);
        }
    }

    #[test]
    fn validation_rejects_nonsense() {
        assert!(
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            }
            .validate(10)
            .is_err()
        );
        assert!(
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            }
            .validate(10)
            .is_err()
        );
        assert!(
            SamplingParams {
                min_p: 2.0,
                ..Default::default()
            }
            .validate(10)
            .is_err()
        );
        assert!(
            SamplingParams {
                logit_bias: vec![(10, 1.0)],
                ..Default::default()
            }
            .validate(10)
            .is_err()
        );
        assert!(SamplingParams::default().validate(10).is_ok());
    }
}
