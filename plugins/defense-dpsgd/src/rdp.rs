//! The Rényi-DP accountant of the sampled Gaussian mechanism: `log A_α` of Mironov,
//! Talwar and Zhang (2019, §3.3) for integer and fractional orders, composed over steps,
//! and converted to `(ε, δ)` by Balle et al. (2020, Theorem 21): the arithmetic of
//! Opacus's `RDPAccountant` (checked against a table made with Opacus,
//! tests/fixtures/dpsgd_reference.csv, by tests/fixtures/make_dpsgd_reference.py).

/// Opacus's default orders: 1.1, 1.2, …, 10.9, then 12, 13, …, 63.
pub fn default_orders() -> Vec<f64> {
    (1..100).map(|x| 1.0 + x as f64 / 10.0).chain((12..64).map(|x| x as f64)).collect()
}

/// `log(e^x + e^y)`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = (x.min(y), x.max(y));
    if a == f64::NEG_INFINITY { b } else { (a - b).exp().ln_1p() + b }
}

/// `log(e^x − e^y)` for `x ≥ y` (−∞ when they are equal).
fn log_sub(x: f64, y: f64) -> f64 {
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x <= y {
        return f64::NEG_INFINITY;
    }
    let d = (x - y).exp_m1();
    if d.is_infinite() { x } else { d.ln() + y }
}

/// `log erfc(x)`, accurate in log space far into the tail (where erfc underflows).
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    // erfc(x) = e^{−x²} / (x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …).
    let y = 1.0 / (x * x);
    let series = 1.0 - y / 2.0 + 3.0 * y * y / 4.0 - 15.0 * y.powi(3) / 8.0 + 105.0 * y.powi(4) / 16.0;
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
}

/// `log A_α` for integer `α`.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binom = 0.0f64;
    for i in 0..=alpha {
        if i > 0 {
            log_binom += ((alpha - i + 1) as f64).ln() - (i as f64).ln();
        }
        let i = i as f64;
        let term = log_binom + i * q.ln() + (alpha as f64 - i) * (1.0 - q).ln() + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    log_a
}

/// `log A_α` for fractional `α`: the two series, each summed until its terms fall below
/// `e^-30`.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let mut coef = 1.0f64; // binom(α, i), by the recurrence binom(α, i+1) = binom(α, i)(α − i)/(i + 1)
    let mut i = 0u64;
    loop {
        let fi = i as f64;
        let j = alpha - fi;
        let log_coef = coef.abs().ln();
        let log_t0 = log_coef + fi * q.ln() + j * (1.0 - q).ln();
        let log_t1 = log_coef + j * q.ln() + fi * (1.0 - q).ln();
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if coef > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
        coef *= (alpha - fi) / (fi + 1.0);
        i += 1;
    }
    log_add(log_a0, log_a1)
}

/// The RDP of one step at order `alpha`.
fn rdp_one(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 || alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 { log_a_int(q, sigma, alpha as u64) } else { log_a_frac(q, sigma, alpha) };
    log_a / (alpha - 1.0)
}

/// The RDP of `steps` steps of the sampled Gaussian mechanism (sampling rate `q`, noise
/// multiplier `sigma`) at each of `orders`.
pub fn compute_rdp(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Vec<f64> {
    orders.iter().map(|&a| rdp_one(q, sigma, a) * steps as f64).collect()
}

/// The smallest `ε` over the orders, and its order: `ε_α = rdp_α − (log δ + log α)/(α − 1)
/// + log((α − 1)/α)` (orders whose value is NaN are skipped; `(∞, NaN)` when all are).
pub fn privacy_spent(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    let mut any = false;
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = r - (delta.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        if eps.is_nan() {
            continue;
        }
        if !any || eps < best.0 {
            best = (eps, a);
            any = true;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference table made with Opacus 1.5.4 (make_dpsgd_reference.py).
    const REFERENCE: &str = include_str!("../../../tests/fixtures/dpsgd_reference.csv");

    #[test]
    fn epsilon_equals_opacus_on_the_reference_table() {
        let (mut rows, mut worst) = (0, 0f64);
        for line in REFERENCE.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let f: Vec<f64> = line.split(',').map(|x| x.trim().parse().unwrap()).collect();
            let (q, sigma, steps, delta, want_eps, want_order) = (f[0], f[1], f[2] as u64, f[3], f[4], f[5]);
            let orders = default_orders();
            let (eps, order) = privacy_spent(&orders, &compute_rdp(q, sigma, steps, &orders), delta);
            let rel = (eps - want_eps).abs() / want_eps;
            assert!(rel < 1e-3, "q {q}, sigma {sigma}, steps {steps}, delta {delta}: epsilon {eps} vs Opacus {want_eps} (relative {rel:.2e})");
            assert_eq!(order, want_order, "q {q}, sigma {sigma}, steps {steps}");
            (rows, worst) = (rows + 1, worst.max(rel));
        }
        assert!(rows >= 20, "{rows} rows");
        eprintln!("{rows} rows: epsilon within {worst:.1e} (relative) of Opacus's, the same order each time");
    }

    #[test]
    fn hand_cases() {
        // q = 1: the Gaussian mechanism, RDP α/(2σ²) per step.
        assert_eq!(compute_rdp(1.0, 2.0, 3, &[2.0, 4.0]), vec![0.75, 1.5]);
        // q = 0: nothing is spent; σ = 0: everything is.
        assert_eq!(compute_rdp(0.0, 1.0, 10, &[2.0]), vec![0.0]);
        assert_eq!(compute_rdp(0.5, 0.0, 10, &[2.0]), vec![f64::INFINITY]);
        // α = 2, integer series: A_2 = (1−q)² + 2q(1−q) + q² e^{1/σ²}.
        let (q, s) = (0.1f64, 1.5f64);
        let a2 = (1.0 - q).powi(2) + 2.0 * q * (1.0 - q) + q * q * (1.0 / (s * s)).exp();
        assert!((compute_rdp(q, s, 1, &[2.0])[0] - a2.ln()).abs() < 1e-14);
        // The conversion at one order: rdp − (log δ + log α)/(α − 1) + log((α − 1)/α).
        let (eps, order) = privacy_spent(&[3.0], &[0.5], 1e-5);
        assert_eq!(order, 3.0);
        assert!((eps - (0.5 - (1e-5f64.ln() + 3f64.ln()) / 2.0 + (2.0f64 / 3.0).ln())).abs() < 1e-14);
        // log erfc's tail formula meets libm's where both hold.
        for x in [19.0, 19.9] {
            let y: f64 = 1.0 / (x * x);
            let tail = -x * x - (x * std::f64::consts::PI.sqrt()).ln() + (1.0 - y / 2.0 + 0.75 * y * y - 1.875 * y.powi(3) + 105.0 / 16.0 * y.powi(4)).ln();
            assert!((tail - libm::erfc(x).ln()).abs() < 1e-9, "{x}");
        }
    }
}
