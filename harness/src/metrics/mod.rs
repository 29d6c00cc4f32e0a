//! Membership-inference metrics (SPEC §10). Members are the positive class and a higher
//! score means "member". AUC is reported as computed, never flipped; `auc_flipped` is a
//! metric of its own.

pub mod memorization;
mod stats;

pub use stats::{PairedTest, average_ranks, paired_auc_test, spearman};

use rand::Rng;
use serde::Serialize;

/// The false-positive rates at which TPR is reported.
pub const FPR_LEVELS: [f64; 5] = [0.25, 0.05, 0.01, 0.001, 0.0];

/// One ROC operating point: call a sample a member iff `score ≥ threshold`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RocPoint {
    /// Members are the samples scoring at least this.
    pub threshold: f64,
    /// Members called members.
    pub tp: usize,
    /// Non-members called members.
    pub fp: usize,
}

/// Operating points for the candidate thresholds +∞ and every distinct score (tied scores
/// are one threshold), from the highest threshold down.
pub fn roc_points(members: &[f64], nonmembers: &[f64]) -> Vec<RocPoint> {
    let mut all: Vec<(f64, bool)> =
        members.iter().map(|&s| (s, true)).chain(nonmembers.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut points = vec![RocPoint { threshold: f64::INFINITY, tp: 0, fp: 0 }];
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < all.len() {
        let threshold = all[i].0;
        while i < all.len() && all[i].0 == threshold {
            if all[i].1 { tp += 1 } else { fp += 1 }
            i += 1;
        }
        points.push(RocPoint { threshold, tp, fp });
    }
    points
}

/// Area under the ROC curve: P(member score > non-member score) + ½ P(equal), i.e. the
/// trapezoidal area over [`roc_points`] (sklearn's `roc_auc_score`).
pub fn auc(points: &[RocPoint], n_members: usize, n_nonmembers: usize) -> f64 {
    let twice: f64 = points.windows(2).map(|w| ((w[1].fp - w[0].fp) * (w[1].tp + w[0].tp)) as f64).sum();
    twice / (2.0 * n_members as f64 * n_nonmembers as f64)
}

/// A rate at a chosen operating point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// The rate (TPR, or balanced accuracy).
    pub value: f64,
    /// fp/N at the threshold.
    pub realized_fpr: f64,
    /// Members are the samples scoring at least this (+∞: none).
    pub threshold: f64,
}

/// The largest TPR over thresholds whose realised FPR (fp/N) is at most `alpha`; among
/// thresholds reaching it, the highest.
pub fn tpr_at_fpr(points: &[RocPoint], n_members: usize, n_nonmembers: usize, alpha: f64) -> OperatingPoint {
    let mut best = points[0];
    for p in points {
        if p.fp as f64 / n_nonmembers as f64 <= alpha && p.tp > best.tp {
            best = *p;
        }
    }
    OperatingPoint {
        value: best.tp as f64 / n_members as f64,
        realized_fpr: best.fp as f64 / n_nonmembers as f64,
        threshold: best.threshold,
    }
}

/// max over thresholds of (TPR + 1 − FPR)/2, ties to the highest threshold. Ties are
/// decided exactly, on tp·N − fp·P (which orders thresholds as the rate does), since
/// equal rates can differ in their last float bit.
pub fn balanced_accuracy(points: &[RocPoint], n_members: usize, n_nonmembers: usize) -> OperatingPoint {
    let exact = |p: &RocPoint| p.tp as i128 * n_nonmembers as i128 - p.fp as i128 * n_members as i128;
    let mut best = points[0];
    for p in points {
        if exact(p) > exact(&best) {
            best = *p;
        }
    }
    OperatingPoint {
        value: (best.tp as f64 / n_members as f64 + 1.0 - best.fp as f64 / n_nonmembers as f64) / 2.0,
        realized_fpr: best.fp as f64 / n_nonmembers as f64,
        threshold: best.threshold,
    }
}

/// Every metric of one score set, at a glance.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Unflipped AUC.
    pub auc: f64,
    /// TPR at each of [`FPR_LEVELS`].
    pub tpr_at_fpr: [OperatingPoint; FPR_LEVELS.len()],
    /// The best balanced accuracy over thresholds.
    pub balanced_accuracy: OperatingPoint,
}

impl Metrics {
    /// All metrics; both score sets must be non-empty.
    pub fn compute(members: &[f64], nonmembers: &[f64]) -> Metrics {
        assert!(!members.is_empty() && !nonmembers.is_empty(), "metrics need members and non-members");
        let points = roc_points(members, nonmembers);
        let (p, n) = (members.len(), nonmembers.len());
        Metrics {
            auc: auc(&points, p, n),
            tpr_at_fpr: FPR_LEVELS.map(|alpha| tpr_at_fpr(&points, p, n, alpha)),
            balanced_accuracy: balanced_accuracy(&points, p, n),
        }
    }

    /// Each metric as summary.csv reports it, in [`METRIC_NAMES`] order: its value and,
    /// for operating-point metrics, the realised FPR and threshold.
    pub fn rows(&self) -> [(&'static str, f64, Option<OperatingPoint>); METRIC_NAMES.len()] {
        let [t25, t5, t1, t01, t0] = self.tpr_at_fpr;
        [
            (METRIC_NAMES[0], self.auc, None),
            (METRIC_NAMES[1], self.auc.max(1.0 - self.auc), None),
            (METRIC_NAMES[2], t25.value, Some(t25)),
            (METRIC_NAMES[3], t5.value, Some(t5)),
            (METRIC_NAMES[4], t1.value, Some(t1)),
            (METRIC_NAMES[5], t01.value, Some(t01)),
            (METRIC_NAMES[6], t0.value, Some(t0)),
            (METRIC_NAMES[7], self.balanced_accuracy.value, Some(self.balanced_accuracy)),
        ]
    }

    /// The metric values in [`METRIC_NAMES`] order.
    pub fn values(&self) -> [f64; METRIC_NAMES.len()] {
        self.rows().map(|(_, value, _)| value)
    }
}

/// Names of the metrics [`Metrics::rows`] returns, as they appear in summary.csv.
pub const METRIC_NAMES: [&str; 8] = [
    "auc",
    "auc_flipped",
    "tpr_at_fpr_0.25",
    "tpr_at_fpr_0.05",
    "tpr_at_fpr_0.01",
    "tpr_at_fpr_0.001",
    "tpr_at_fpr_0",
    "balanced_accuracy",
];

/// Bootstrap settings: `resamples` draws, seeded.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Bootstrap {
    /// Replicates drawn (0: no intervals).
    pub resamples: usize,
    /// Seed of every replicate stream.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap { resamples: 1000, seed: 0 }
    }
}

/// AUC of member scores against non-member scores.
pub fn auc_of(members: &[f64], nonmembers: &[f64]) -> f64 {
    auc(&roc_points(members, nonmembers), members.len(), nonmembers.len())
}

/// The scores of the members and of the non-members, each in the order given.
pub fn by_membership(scores: &[f64], members: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let of = |wanted: bool| scores.iter().zip(members).filter(|(_, m)| **m == wanted).map(|(s, _)| *s).collect();
    (of(true), of(false))
}

/// 95% percentile intervals for each of [`Metrics::values`], from a stratified bootstrap:
/// members and non-members are each resampled with replacement at their own size, so
/// every replicate has both classes. `stream` (e.g. model/attack/category) picks an
/// independent random stream, so intervals do not depend on the order work is done in.
pub fn bootstrap_intervals(members: &[f64], nonmembers: &[f64], settings: Bootstrap, stream: &str) -> Vec<(f64, f64)> {
    if settings.resamples == 0 {
        return vec![(f64::NAN, f64::NAN); METRIC_NAMES.len()];
    }
    let mut rng = crate::rng::stream(&format!("{}/{stream}", settings.seed));
    let mut replicates: Vec<Vec<f64>> = vec![Vec::with_capacity(settings.resamples); METRIC_NAMES.len()];
    let (mut m, mut n) = (vec![0.0; members.len()], vec![0.0; nonmembers.len()]);
    for _ in 0..settings.resamples {
        m.iter_mut().for_each(|x| *x = members[rng.gen_range(0..members.len())]);
        n.iter_mut().for_each(|x| *x = nonmembers[rng.gen_range(0..nonmembers.len())]);
        for (column, value) in replicates.iter_mut().zip(Metrics::compute(&m, &n).values()) {
            column.push(value);
        }
    }
    replicates
        .into_iter()
        .map(|mut values| {
            values.sort_by(f64::total_cmp);
            (percentile(&values, 2.5), percentile(&values, 97.5))
        })
        .collect()
}

/// The q-th percentile of sorted values, interpolating linearly (numpy's default).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_roc_with_ties() {
        // members {3, 2, 2}, non-members {2, 1}: thresholds inf, 3, 2, 1.
        let points = roc_points(&[3.0, 2.0, 2.0], &[2.0, 1.0]);
        let tuples: Vec<_> = points.iter().map(|p| (p.threshold, p.tp, p.fp)).collect();
        assert_eq!(tuples, vec![(f64::INFINITY, 0, 0), (3.0, 1, 0), (2.0, 3, 1), (1.0, 3, 2)]);
        // Pairs: (3>2, 3>1, 2=2 ×2 → ½ each, 2>1 ×2) = 5/6.
        assert!((auc(&points, 3, 2) - 5.0 / 6.0).abs() < 1e-15);
        let t = tpr_at_fpr(&points, 3, 2, 0.25);
        assert_eq!((t.value, t.realized_fpr, t.threshold), (1.0 / 3.0, 0.0, 3.0));
        let t = tpr_at_fpr(&points, 3, 2, 0.5);
        assert_eq!((t.value, t.realized_fpr, t.threshold), (1.0, 0.5, 2.0));
        let b = balanced_accuracy(&points, 3, 2);
        // threshold 3: (1/3 + 1)/2 = 2/3; threshold 2: (1 + 1/2)/2 = 3/4.
        assert_eq!((b.value, b.threshold), (0.75, 2.0));
    }

    #[test]
    fn balanced_accuracy_ties_go_to_the_highest_threshold_exactly() {
        // P = 2, N = 6. Threshold 5: tp 1, fp 1 → (1/2 + 5/6)/2 = 2/3. Threshold 1: tp 2,
        // fp 4 → (1 + 1/3)/2 = 2/3 as well, but that one rounds a bit higher in floats.
        let points = roc_points(&[5.0, 1.0], &[6.0, 4.0, 3.0, 2.0, 0.5, -1.0]);
        let rate = |tp: f64, fp: f64| (tp / 2.0 + 1.0 - fp / 6.0) / 2.0;
        assert!(rate(2.0, 4.0) > rate(1.0, 1.0), "the float trap this test is about");
        let b = balanced_accuracy(&points, 2, 6);
        assert_eq!((b.threshold, b.realized_fpr), (5.0, 1.0 / 6.0));
        assert_eq!(b.value, rate(1.0, 1.0));
    }

    #[test]
    fn separable_inverted_and_constant() {
        let m = Metrics::compute(&[5.0, 6.0], &[1.0, 2.0, 3.0]);
        assert_eq!(m.auc, 1.0);
        assert_eq!(m.tpr_at_fpr[4], OperatingPoint { value: 1.0, realized_fpr: 0.0, threshold: 5.0 });
        assert_eq!(m.balanced_accuracy.value, 1.0);
        let m = Metrics::compute(&[1.0, 2.0], &[5.0, 6.0, 7.0]);
        assert_eq!(m.auc, 0.0);
        assert_eq!(m.values()[1], 1.0);
        // Nothing is gained at any threshold: the highest, +inf, is reported.
        assert_eq!(m.tpr_at_fpr[4], OperatingPoint { value: 0.0, realized_fpr: 0.0, threshold: f64::INFINITY });
        assert_eq!(m.balanced_accuracy, OperatingPoint { value: 0.5, realized_fpr: 0.0, threshold: f64::INFINITY });
        let m = Metrics::compute(&[0.3, 0.3], &[0.3]);
        assert_eq!(m.auc, 0.5);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_estimate() {
        let members: Vec<f64> = (0..40).map(|i| (i as f64 * 0.37).sin() + 0.4).collect();
        let nonmembers: Vec<f64> = (0..50).map(|i| (i as f64 * 0.91).cos()).collect();
        let settings = Bootstrap { resamples: 200, seed: 3 };
        let a = bootstrap_intervals(&members, &nonmembers, settings, "x");
        assert_eq!(a, bootstrap_intervals(&members, &nonmembers, settings, "x"));
        assert_ne!(a, bootstrap_intervals(&members, &nonmembers, settings, "y"));
        let auc = Metrics::compute(&members, &nonmembers).auc;
        assert!(a[0].0 < auc && auc < a[0].1, "{a:?} vs {auc}");
        assert!(a[0].1 - a[0].0 > 0.05);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], 2.5) = 1.075, 97.5 → 3.925.
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 2.5) - 1.075).abs() < 1e-12);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 97.5) - 3.925).abs() < 1e-12);
    }
}
