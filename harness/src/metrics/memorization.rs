//! Memorization statistics (SPEC §9.1): one row per model and record, aggregated with
//! both denominators: the paper's (`Σ matched / (N·K)`: short references count as misses)
//! and per-sample (`mean matched / compared`, only existing reference tokens count), with
//! stratified bootstrap intervals, and the teacher–student overlap.

use std::collections::HashMap;

use rand::Rng;
use serde::Serialize;

use super::{Bootstrap, percentile};

/// The comparison window of the paper.
pub const DEFAULT_K: usize = 32;

/// Teacher–student overlap thresholds.
pub const OVERLAP_THRESHOLDS: [(f64, &str); 5] = [
    (0.5, "teacher_overlap_0.5"),
    (0.6, "teacher_overlap_0.6"),
    (0.7, "teacher_overlap_0.7"),
    (0.8, "teacher_overlap_0.8"),
    (0.9, "teacher_overlap_0.9"),
];

/// One model on one record (a row of `memorization.csv`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorizationRow {
    /// The model.
    pub model: String,
    /// The record.
    pub sample_id: String,
    /// Its category.
    pub category: String,
    /// Whether it is a member.
    pub member: bool,
    /// Positions among the first `compared` where the generation equals the reference.
    pub matched: usize,
    /// `min(K, reference length)`.
    pub compared: usize,
    /// `matched / compared` (0 when nothing is compared).
    pub ratio: f64,
    /// Length of the longest common prefix of generation and reference (at most K).
    pub exact_prefix: usize,
    /// Whether the whole compared window (`compared` ≥ 1 tokens) is reproduced exactly.
    pub extracted: bool,
}

/// One aggregate of a model's memorization (a summary.csv row without its identity).
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The metric name.
    pub metric: &'static str,
    /// Its value.
    pub value: f64,
    /// 95% bootstrap interval.
    pub ci: Option<(f64, f64)>,
    /// Members behind the value.
    pub n_members: usize,
    /// Non-members behind the value.
    pub n_nonmembers: usize,
}

/// Rates over a set of rows: paper denominator, per-sample denominator, extraction rate.
fn rates(rows: &[&MemorizationRow], k: usize) -> [f64; 3] {
    if rows.is_empty() {
        return [f64::NAN; 3];
    }
    let n = rows.len() as f64;
    let paper = rows.iter().map(|r| r.matched as f64).sum::<f64>() / (n * k as f64);
    let per_sample = rows.iter().map(|r| r.ratio).sum::<f64>() / n;
    let extracted = rows.iter().filter(|r| r.extracted).count() as f64 / n;
    [paper, per_sample, extracted]
}

/// Member/non-member metrics of one group of rows (`value(members, nonmembers)`).
type Statistic = fn(&[f64; 3], &[f64; 3]) -> f64;

const STATISTICS: [(&str, Statistic); 9] = [
    ("mem_rate_member", |m, _| m[0]),
    ("mem_rate_nonmember", |_, n| n[0]),
    ("mem_gap", |m, n| m[0] - n[0]),
    ("exact_extraction_member", |m, _| m[2]),
    ("exact_extraction_nonmember", |_, n| n[2]),
    ("mem_rate_member_per_sample", |m, _| m[1]),
    ("mem_rate_nonmember_per_sample", |_, n| n[1]),
    ("mem_gap_per_sample", |m, n| m[1] - n[1]),
    ("exact_extraction_gap", |m, n| m[2] - n[2]),
];

/// The memorization aggregates of one model's rows, with stratified bootstrap intervals
/// (members and non-members resampled separately; `stream` picks the random stream).
pub fn aggregates(rows: &[MemorizationRow], k: usize, bootstrap: Bootstrap, stream: &str) -> Vec<Aggregate> {
    let members: Vec<&MemorizationRow> = rows.iter().filter(|r| r.member).collect();
    let nonmembers: Vec<&MemorizationRow> = rows.iter().filter(|r| !r.member).collect();
    let (m, n) = (rates(&members, k), rates(&nonmembers, k));
    let mut replicates = vec![Vec::new(); STATISTICS.len()];
    if bootstrap.resamples > 0 && !members.is_empty() && !nonmembers.is_empty() {
        let mut rng = crate::rng::stream(&format!("{}/memorization/{stream}", bootstrap.seed));
        for _ in 0..bootstrap.resamples {
            let bm: Vec<&MemorizationRow> = (0..members.len()).map(|_| members[rng.gen_range(0..members.len())]).collect();
            let bn: Vec<&MemorizationRow> = (0..nonmembers.len()).map(|_| nonmembers[rng.gen_range(0..nonmembers.len())]).collect();
            let (rm, rn) = (rates(&bm, k), rates(&bn, k));
            for (column, (_, stat)) in replicates.iter_mut().zip(STATISTICS) {
                column.push(stat(&rm, &rn));
            }
        }
    }
    STATISTICS
        .iter()
        .zip(replicates)
        .map(|((metric, stat), mut values)| {
            values.sort_by(f64::total_cmp);
            let ci = (!values.is_empty()).then(|| (percentile(&values, 2.5), percentile(&values, 97.5)));
            Aggregate { metric, value: stat(&m, &n), ci, n_members: members.len(), n_nonmembers: nonmembers.len() }
        })
        .collect()
}

/// Teacher–student overlap: for each threshold r, among the members the teacher
/// reproduces with ratio above r, the student's mean ratio (NaN when there are none).
pub fn teacher_overlap(teacher: &[MemorizationRow], student: &[MemorizationRow]) -> Vec<Aggregate> {
    let student_ratio: HashMap<&str, f64> = student.iter().map(|r| (r.sample_id.as_str(), r.ratio)).collect();
    OVERLAP_THRESHOLDS
        .iter()
        .map(|&(r, metric)| {
            let picked: Vec<f64> = teacher
                .iter()
                .filter(|t| t.member && t.ratio > r)
                .filter_map(|t| student_ratio.get(t.sample_id.as_str()).copied())
                .collect();
            let value = if picked.is_empty() { f64::NAN } else { picked.iter().sum::<f64>() / picked.len() as f64 };
            Aggregate { metric, value, ci: None, n_members: picked.len(), n_nonmembers: 0 }
        })
        .collect()
}

/// Generation and comparison settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemorizeSettings {
    /// Comparison window (the paper's K = 32).
    pub k: usize,
    /// Tokens generated per prompt (at least `k`; more gives utility longer answers).
    pub max_new_tokens: usize,
    /// Hugging Face's `no_repeat_ngram_size` (0 off; 6 as the paper).
    pub no_repeat_ngram: usize,
    /// Prompts per batch.
    pub batch_size: usize,
    /// Generation stops after this token.
    pub eos: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(member: bool, matched: usize, compared: usize, extracted: bool) -> MemorizationRow {
        MemorizationRow {
            model: "m".into(),
            sample_id: format!("s{matched}{compared}{member}"),
            category: "c".into(),
            member,
            matched,
            compared,
            ratio: if compared == 0 { 0.0 } else { matched as f64 / compared as f64 },
            exact_prefix: 0,
            extracted,
        }
    }

    #[test]
    fn aggregates_use_both_denominators() {
        // K = 4. Members: 4/4 and 1/2 (short reference). Non-member: 0/4.
        let rows = vec![row(true, 4, 4, true), row(true, 1, 2, false), row(false, 0, 4, false)];
        let a = aggregates(&rows, 4, Bootstrap { resamples: 0, seed: 0 }, "x");
        let get = |name: &str| a.iter().find(|x| x.metric == name).unwrap().value;
        // Paper: (4 + 1) / (2 · 4) = 0.625; per sample: (1 + 0.5) / 2 = 0.75.
        assert_eq!(get("mem_rate_member"), 0.625);
        assert_eq!(get("mem_rate_member_per_sample"), 0.75);
        assert_eq!(get("mem_rate_nonmember"), 0.0);
        assert_eq!(get("mem_gap"), 0.625);
        assert_eq!(get("exact_extraction_member"), 0.5);
        assert_eq!(get("exact_extraction_nonmember"), 0.0);
        let with_ci = aggregates(&rows, 4, Bootstrap { resamples: 200, seed: 1 }, "x");
        let (lo, hi) = with_ci[0].ci.unwrap();
        assert!(lo <= 0.625 && 0.625 <= hi && lo >= 0.125 && hi <= 1.0, "{lo} {hi}");
    }

    #[test]
    fn overlap_takes_members_the_teacher_reproduces() {
        let mut t1 = row(true, 4, 4, true);
        t1.sample_id = "a".into();
        let mut t2 = row(true, 3, 5, false); // ratio 0.6
        t2.sample_id = "b".into();
        let mut s1 = row(true, 1, 4, false);
        s1.sample_id = "a".into();
        let mut s2 = row(true, 5, 5, true);
        s2.sample_id = "b".into();
        let o = teacher_overlap(&[t1, t2], &[s1, s2]);
        // r = 0.5: both (0.25 + 1) / 2; r = 0.6: only `a` (0.6 is not above 0.6).
        assert_eq!(o[0].value, 0.625);
        assert_eq!((o[1].value, o[1].n_members), (0.25, 1));
        assert_eq!(o[4].value, 0.25);
    }
}
