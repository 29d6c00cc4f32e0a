//! The teacher-sample filter: the data owner holds the private records, so before the
//! teacher's samples become a student's training data (SeqKD, and every method that
//! trains on them) each sample is checked against them and dropped when it repeats one.
//!
//! A sample's overlap with a record is the share of the sample's distinct token `n`-grams
//! (of its response) that occur anywhere in the record (prompt and response); its overlap
//! is the largest over the private records. Samples whose overlap exceeds `r` are
//! dropped (the harness trains on the ground truth of their prompts instead and records
//! how many it dropped). A sample shorter than `n` tokens has no `n`-gram and is kept.

use std::collections::{HashMap, HashSet};

use kdharness_plugin_api::defense::{Defense, DefenseTarget, TokenSeqs};
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};

/// `ngram_filter`.
pub struct NgramFilter {
    n: usize,
    r: f64,
}

impl NgramFilter {
    /// The overlap of `sample` with the most similar private record (0 without n-grams).
    fn overlap(&self, sample: &[u32], index: &HashMap<&[u32], Vec<u32>>) -> f64 {
        let grams: HashSet<&[u32]> = sample.windows(self.n).collect();
        if grams.is_empty() {
            return 0.0;
        }
        let mut shared: HashMap<u32, usize> = HashMap::new();
        for g in &grams {
            for &record in index.get(g).map(Vec::as_slice).unwrap_or(&[]) {
                *shared.entry(record).or_default() += 1;
            }
        }
        shared.values().copied().max().unwrap_or(0) as f64 / grams.len() as f64
    }
}

impl Defense for NgramFilter {
    const NAME: &'static str = "ngram_filter";
    const DESCRIPTION: &'static str = "drops teacher samples whose n-gram overlap with a private record exceeds r";
    const ACTS_ON: DefenseTarget = DefenseTarget::TEACHER_SAMPLES;
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("n", "4", "the n-gram length, in tokens"),
        ParamSpec::new("r", "0.5", "the overlap above which a sample is dropped, in [0, 1]"),
    ];

    fn new(params: ParamList<'_>, _seed: u64) -> Result<Self, String> {
        let n = params.count("n")? as usize;
        if n == 0 {
            return Err("n must be at least 1".into());
        }
        let r = params.f64("r")?;
        if !(0.0..=1.0).contains(&r) {
            return Err(format!("r must be in [0, 1], got {r}"));
        }
        Ok(NgramFilter { n, r })
    }

    fn keep_samples(&mut self, samples: TokenSeqs<'_>, private: TokenSeqs<'_>) -> Result<Vec<bool>, String> {
        // Each n-gram of the private records, with the records it occurs in (each once).
        let mut index: HashMap<&[u32], Vec<u32>> = HashMap::new();
        for (i, record) in private.iter().enumerate() {
            for g in record.windows(self.n) {
                let holders = index.entry(g).or_default();
                if holders.last() != Some(&(i as u32)) {
                    holders.push(i as u32);
                }
            }
        }
        Ok(samples.iter().map(|s| self.overlap(s, &index) <= self.r).collect())
    }
}

export_plugins!(defenses: [NgramFilter]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::defense::{PackedSeqs, instance};

    #[test]
    fn drops_every_sample_above_the_threshold_and_keeps_the_rest() {
        let private: Vec<Vec<u32>> = vec![(100..140).collect(), (200..240).collect()];
        // Samples built to overlap a known share of their 4-grams with one record.
        let overlapping = |record: u32, shared: usize, fresh: usize| -> Vec<u32> {
            let mut s: Vec<u32> = (record..record + shared as u32 + 3).collect();
            // Fresh tokens (never in a record); the n-grams across the seam are fresh too.
            s.extend((0..fresh as u32).map(|i| 1000 + i));
            s
        };
        let samples = [
            overlapping(100, 10, 0),  // 10 of 10 grams shared: overlap 1
            overlapping(200, 6, 7),   // 6 shared of 6 + 3 seam + 4 fresh = 13
            overlapping(100, 2, 20),  // 2 of 2 + 3 + 17 = 22
            vec![5, 6, 7, 8, 9],      // no shared gram
            vec![100, 101, 102],      // shorter than n: kept
            [(100..106).collect::<Vec<u32>>(), (203..209).collect()].concat(), // 3 with each record, of 9
        ];
        let want_overlap = [1.0, 6.0 / 13.0, 2.0 / 22.0, 0.0, 0.0, 3.0 / 9.0];
        let packed = (PackedSeqs::new(samples.iter().map(Vec::as_slice)), PackedSeqs::new(private.iter().map(Vec::as_slice)));
        for r in ["0", "0.3", "0.5", "0.7", "1"] {
            let mut d = instance::<NgramFilter>(&[("n", "4"), ("r", r)], 0).unwrap();
            let keep = d.keep_samples(packed.0.view(), packed.1.view()).unwrap();
            let r: f64 = r.parse().unwrap();
            let want: Vec<bool> = want_overlap.iter().map(|o| *o <= r).collect();
            assert_eq!(keep, want, "r = {r}");
        }
        // The record sharing the most grams counts, not the sum over records: the last
        // sample shares 3 grams with each record, so its overlap is 3/9, not 6/9.
        let mut d = instance::<NgramFilter>(&[("n", "4"), ("r", "0.34")], 0).unwrap();
        let keep = d.keep_samples(packed.0.view(), packed.1.view()).unwrap();
        assert!(keep[5], "3/9 ≤ 0.34");
        let mut d = instance::<NgramFilter>(&[("n", "4"), ("r", "0.33")], 0).unwrap();
        assert!(!d.keep_samples(packed.0.view(), packed.1.view()).unwrap()[5], "3/9 > 0.33");
    }

    #[test]
    fn refuses_bad_parameters() {
        assert!(instance::<NgramFilter>(&[("n", "0")], 0).is_err());
        assert!(instance::<NgramFilter>(&[("r", "1.5")], 0).is_err());
    }
}
