//! Splitting one dataset into the teacher's private members, the students' public KD
//! data, and held-out non-members (SPEC §4), pinned in `split.json` for reproduction.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Record;

/// How records are assigned to parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// The paper's: the first `nonmember_count` records are non-members, the rest is halved
    /// in file order (members first, then public).
    #[default]
    Paper,
    /// The same part sizes over a seeded random permutation; each part keeps file order.
    Random,
}

/// Why a dataset cannot be split as asked.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum SplitError {
    /// No non-members were asked for.
    #[error("--nonmember-count must be at least 1: attacks need non-members to compare with")]
    NoNonmembers,
    /// Too few records remain for members and public data.
    #[error("{} has {records} records: {nonmember_count} non-members leave {rest}, too few for both members and public data; lower --nonmember-count", path.display())]
    TooSmall { path: std::path::PathBuf, records: usize, nonmember_count: usize, rest: usize },
}

/// Sample ids per part, and how they were chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// How records were assigned.
    pub mode: SplitMode,
    /// The seed of a random split.
    pub seed: Option<u64>,
    /// Records held out as non-members.
    pub nonmember_count: usize,
    /// The teacher's private fine-tuning set.
    pub members: Vec<String>,
    /// The students' KD data.
    pub public: Vec<String>,
    /// Held-out records.
    pub nonmembers: Vec<String>,
}

impl Split {
    /// The records of each part of `records` (the records this split was made from):
    /// members, public, non-members.
    pub fn parts<'a>(&self, records: &'a [Record]) -> [Vec<&'a Record>; 3] {
        let by_id: std::collections::HashMap<&str, &Record> = records.iter().map(|r| (r.id.as_str(), r)).collect();
        [&self.members, &self.public, &self.nonmembers].map(|ids| ids.iter().map(|id| by_id[id.as_str()]).collect())
    }
}

/// Splits `records` (ids as loaded, e.g. `r{i}`). With an odd remainder the public half
/// gets the extra record.
pub fn split(records: &[Record], mode: SplitMode, nonmember_count: usize, seed: u64, path: &Path) -> Result<Split, SplitError> {
    if nonmember_count == 0 {
        return Err(SplitError::NoNonmembers);
    }
    let rest = records.len().saturating_sub(nonmember_count);
    if rest < 2 {
        return Err(SplitError::TooSmall { path: path.to_path_buf(), records: records.len(), nonmember_count, rest });
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    if mode == SplitMode::Random {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    let n_members = rest / 2;
    let part = |range: std::ops::Range<usize>| -> Vec<String> {
        let mut indices = order[range].to_vec();
        indices.sort_unstable();
        indices.into_iter().map(|i| records[i].id.clone()).collect()
    };
    Ok(Split {
        mode,
        seed: (mode == SplitMode::Random).then_some(seed),
        nonmember_count,
        nonmembers: part(0..nonmember_count),
        members: part(nonmember_count..nonmember_count + n_members),
        public: part(nonmember_count + n_members..records.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Origin;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                id: format!("r{i}"),
                instruction: format!("q{i}"),
                context: String::new(),
                response: format!("a{i}"),
                category: "open_qa".into(),
                origin: Origin { file: "d.jsonl".into(), line: i + 1 },
            })
            .collect()
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn paper_split_follows_file_order() {
        let s = split(&records(10), SplitMode::Paper, 3, 0, Path::new("d.jsonl")).unwrap();
        assert_eq!((s.nonmembers, s.members, s.public), (ids(0..3), ids(3..6), ids(6..10)));
        assert_eq!(s.seed, None);
    }

    #[test]
    fn random_split_is_seeded_disjoint_complete_and_ordered() {
        let data = records(50);
        let a = split(&data, SplitMode::Random, 10, 7, Path::new("d")).unwrap();
        assert_eq!(a, split(&data, SplitMode::Random, 10, 7, Path::new("d")).unwrap());
        assert_ne!(a.members, split(&data, SplitMode::Random, 10, 8, Path::new("d")).unwrap().members);
        assert_eq!((a.nonmembers.len(), a.members.len(), a.public.len()), (10, 20, 20));
        let mut all: Vec<String> = a.nonmembers.iter().chain(&a.members).chain(&a.public).cloned().collect();
        let index = |id: &String| id[1..].parse::<usize>().unwrap();
        assert!(a.members.windows(2).all(|w| index(&w[0]) < index(&w[1])));
        all.sort_by_key(index);
        assert_eq!(all, ids(0..50));
        assert_ne!(a.nonmembers, ids(0..10));
    }

    #[test]
    fn too_small_is_an_error() {
        let err = split(&records(4), SplitMode::Paper, 3, 0, Path::new("d.jsonl")).unwrap_err().to_string();
        assert!(err.contains("d.jsonl has 4 records: 3 non-members leave 1"), "{err}");
        assert!(matches!(split(&records(4), SplitMode::Paper, 0, 0, Path::new("d")), Err(SplitError::NoNonmembers)));
    }
}
