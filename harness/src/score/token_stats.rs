//! The per-position reduction over the vocabulary: one pass for the maximum, one for the
//! exponential moments. This is the hot loop of scoring (it touches every logit), so it
//! is written for the auto-vectoriser: fixed-width lanes, a branch-free `exp`, and f32
//! lane sums flushed into f64 every block so that accuracy does not depend on vocabulary
//! size.

/// Signals at one scored position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenStats {
    /// log q(y) of the target token (natural log).
    pub logprob: f64,
    /// Σ_v q log q.
    pub mean: f64,
    /// Σ_v q (log q)² − mean².
    pub var: f64,
    /// The most likely token (the first one on ties).
    pub argmax: u32,
}

const LANES: usize = 16;
const BLOCK: usize = 1024;

/// `exp(x)` for `−87 ≤ x ≤ 0` to about 2 ulp (Cephes' expf polynomial), branch-free so it
/// vectorises. Callers drop terms below −87 (they are under 1.7e−38 of the maximum).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer with plain adds, which
    // vectorise on every x86-64 level (floor() needs SSE4.1 or a libm call).
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * C1 - n * C2;
    let r2 = r * r;
    let p = (((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r
        + 0.5)
        * r2
        + r
        + 1.0;
    f32::from_bits(((n as i32 + 127) as u32) << 23) * p
}

/// (max, index of its first occurrence, whether any logit is NaN or +∞).
#[inline(always)]
fn argmax_of(row: &[f32]) -> (f32, usize, bool) {
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut at = [0u32; LANES];
    let mut bad = [false; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail_start = row.len() - chunks.remainder().len();
    for (c, chunk) in chunks.enumerate() {
        for i in 0..LANES {
            let better = chunk[i] > best[i];
            best[i] = if better { chunk[i] } else { best[i] };
            at[i] = if better { (c * LANES + i) as u32 } else { at[i] };
            bad[i] |= chunk[i].is_nan() | (chunk[i] == f32::INFINITY);
        }
    }
    let tail = &row[tail_start..];
    let bad = bad.iter().any(|&b| b) || tail.iter().any(|x| x.is_nan() || *x == f32::INFINITY);
    let mut max = (f32::NEG_INFINITY, usize::MAX);
    for (value, index) in best.iter().zip(at).map(|(&v, i)| (v, i as usize)).chain(tail.iter().copied().zip(tail_start..)) {
        if value > max.0 || (value == max.0 && index < max.1) {
            max = (value, index);
        }
    }
    (max.0, if max.1 == usize::MAX { 0 } else { max.1 }, bad)
}

/// One logit's terms (e, e·d, e·d²), d = x − max, e = exp(d). d is floored at −87, so a
/// masked logit (−∞, or f32::MIN) contributes about 1e−34 to a sum of at least 1 instead
/// of poisoning it; NaN and +∞ logits are caught by [`argmax_of`] before.
#[inline(always)]
fn terms(x: f32, max: f32) -> (f32, f32, f32) {
    let d = (x - max).max(-87.0);
    let e = exp_nonpositive(d);
    (e, e * d, e * d * d)
}

/// (Σ e, Σ e·d, Σ e·d²) over the row.
#[inline(always)]
fn exp_moments(row: &[f32], max: f32) -> (f64, f64, f64) {
    let (mut s0, mut s1, mut s2) = (0f64, 0f64, 0f64);
    for block in row.chunks(BLOCK) {
        let (mut a, mut b, mut c) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for i in 0..LANES {
                let (e, ed, edd) = terms(chunk[i], max);
                a[i] += e;
                b[i] += ed;
                c[i] += edd;
            }
        }
        for (i, &x) in tail.iter().enumerate() {
            let (e, ed, edd) = terms(x, max);
            a[i] += e;
            b[i] += ed;
            c[i] += edd;
        }
        s0 += a.iter().map(|&v| v as f64).sum::<f64>();
        s1 += b.iter().map(|&v| v as f64).sum::<f64>();
        s2 += c.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s0, s1, s2)
}

/// (max, argmax, exponential moments); the moments are NaN when a logit is NaN or +∞.
#[inline(always)]
fn reduce(row: &[f32]) -> (f32, usize, (f64, f64, f64)) {
    let (max, argmax, bad) = argmax_of(row);
    if bad {
        return (max, argmax, (f64::NAN, f64::NAN, f64::NAN));
    }
    (max, argmax, exp_moments(row, max))
}

/// The same code compiled for wider vector units, chosen at run time: results are
/// bit-identical (no fused multiply-adds are introduced), only faster.
#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f,avx512vl,avx512dq")]
    pub fn reduce_avx512(row: &[f32]) -> (f32, usize, (f64, f64, f64)) {
        super::reduce(row)
    }

    #[target_feature(enable = "avx2")]
    pub fn reduce_avx2(row: &[f32]) -> (f32, usize, (f64, f64, f64)) {
        super::reduce(row)
    }
}

fn reduce_dispatch(row: &[f32]) -> (f32, usize, (f64, f64, f64)) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") && std::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the features were just detected.
            return unsafe { wide::reduce_avx512(row) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature was just detected.
            return unsafe { wide::reduce_avx2(row) };
        }
    }
    reduce(row)
}

/// Signals of one row of logits for target token `target`. Non-finite logits (NaN, +∞)
/// give non-finite signals, which the caller reports; −∞ logits (masked tokens) are
/// simply impossible tokens.
///
/// With d_v = x_v − max and s = Σ e^{d_v}: log q_v = d_v − ln s, so
/// Σ q log q = (Σ e d)/s − ln s and Var_q(log q) = Var_q(d) = (Σ e d²)/s − ((Σ e d)/s)²
/// (the variance of log q equals that of the logits: they differ by a constant).
pub fn token_stats(row: &[f32], target: usize) -> TokenStats {
    let (max, argmax, (s0, s1, s2)) = reduce_dispatch(row);
    let ln_s = s0.ln();
    let mean_d = s1 / s0;
    TokenStats {
        logprob: (row[target] - max) as f64 - ln_s,
        mean: mean_d - ln_s,
        var: s2 / s0 - mean_d * mean_d,
        argmax: argmax as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definitions, evaluated the slow way in f64.
    fn reference(row: &[f32], target: usize) -> TokenStats {
        let max = row.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        let logq: Vec<f64> = row.iter().map(|&x| x as f64 - lse).collect();
        let mean: f64 = logq.iter().map(|l| l.exp() * l).sum();
        let second: f64 = logq.iter().map(|l| l.exp() * l * l).sum();
        let argmax = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
        TokenStats { logprob: logq[target], mean, var: second - mean * mean, argmax }
    }

    fn assert_close(got: TokenStats, want: TokenStats, tol: f64) {
        assert_eq!(got.argmax, want.argmax);
        for (g, w, what) in [(got.logprob, want.logprob, "logprob"), (got.mean, want.mean, "mean"), (got.var, want.var, "var")] {
            assert!((g - w).abs() <= tol * w.abs().max(1.0), "{what}: got {g}, want {w}");
        }
    }

    #[test]
    fn hand_computed_two_token_distribution() {
        // q = (1/(1+e), e/(1+e)) for logits (0, 1).
        let e = std::f64::consts::E;
        let (q0, q1) = (1.0 / (1.0 + e), e / (1.0 + e));
        let (l0, l1) = (q0.ln(), q1.ln());
        let got = token_stats(&[0.0, 1.0], 0);
        let mean = q0 * l0 + q1 * l1;
        assert_close(got, TokenStats { logprob: l0, mean, var: q0 * l0 * l0 + q1 * l1 * l1 - mean * mean, argmax: 1 }, 1e-6);
    }

    #[test]
    fn uniform_has_zero_variance() {
        let row = vec![3.5f32; 1000];
        let got = token_stats(&row, 7);
        assert!((got.logprob + (1000f64).ln()).abs() < 1e-6);
        assert!((got.mean + (1000f64).ln()).abs() < 1e-6);
        assert!(got.var.abs() < 1e-9);
        assert_eq!(got.argmax, 0);
    }

    #[test]
    fn matches_the_definition_on_large_and_extreme_rows() {
        // A deterministic pseudo-random row of a real vocabulary size, with extreme logits.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut row: Vec<f32> = (0..49_157).map(|_| (next() - 0.5) * 20.0).collect();
        row[123] = 50.0;
        row[9] = -50.0;
        for target in [0, 9, 123, 49_156] {
            assert_close(token_stats(&row, target), reference(&row, target), 2e-6);
        }
        let peaked: Vec<f32> = (0..333).map(|i| if i == 5 { 40.0 } else { -40.0 + i as f32 * 0.01 }).collect();
        assert_close(token_stats(&peaked, 5), reference(&peaked, 5), 1e-6);
        assert_close(token_stats(&peaked, 6), reference(&peaked, 6), 1e-6);
    }

    #[test]
    fn masked_logits_are_impossible_tokens_and_bad_logits_are_not_hidden() {
        let row = [0.0f32, f32::NEG_INFINITY, 1.0, f32::MIN, -1e30];
        let got = token_stats(&row, 0);
        let want = token_stats(&[0.0, 1.0], 0);
        assert_eq!((got.logprob, got.mean, got.argmax), (want.logprob, want.mean, 2));
        assert!((got.var - want.var).abs() < 1e-12 && got.var.is_finite());
        assert_eq!(token_stats(&row, 1).logprob, f64::NEG_INFINITY);
        let nan = token_stats(&[0.0, f32::NAN, 1.0], 0);
        assert!(!(nan.mean.is_finite() && nan.var.is_finite()));
        let inf = token_stats(&[0.0, f32::INFINITY, 1.0], 0);
        assert!(!(inf.logprob.is_finite() && inf.mean.is_finite()));
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let row: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1013) as f32 * 0.05 - 25.0).collect();
        let portable = reduce(&row);
        assert_eq!(reduce_dispatch(&row), portable);
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: detected.
                assert_eq!(unsafe { wide::reduce_avx2(&row) }, portable);
            }
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") && std::is_x86_feature_detected!("avx512dq") {
                // SAFETY: detected.
                assert_eq!(unsafe { wide::reduce_avx512(&row) }, portable);
            }
        }
        assert_eq!(argmax_of(&[1.0, 3.0, 3.0, 2.0]), (3.0, 1, false));
        let mut tied = vec![0.0f32; 40];
        tied[37] = 1.0;
        tied[21] = 1.0;
        assert_eq!(argmax_of(&tied), (1.0, 21, false));
        tied[33] = f32::NAN;
        assert!(argmax_of(&tied).2);
    }

    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let rel = ((exp_nonpositive(x) as f64) / (x as f64).exp() - 1.0).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }
}
