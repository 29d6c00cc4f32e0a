//! Per-block risk (SPEC §9.2, the paper's "BLiMP"): every attack that asks for weight
//! perturbations, rerun with only one transformer block's weights perturbed at a time; the
//! AUC per block and attack goes to `blocks.csv`.

use super::{AttackError, Planned};
use crate::blocks::{BlockError, OnnxWeights, Scope};
use crate::metrics;
use crate::report::BlockRow;
use crate::score::{ScoreError, Scored, Scorer, Subject};
use crate::status;

/// Why a per-block sweep stopped.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum SweepError {
    #[error(transparent)]
    Blocks(#[from] BlockError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Attack(#[from] AttackError),
}

/// Per-block risk of one model: for every block and every attack of `attacks` (each asks
/// for its perturbations), the attack's AUC with only that block's weights perturbed.
pub fn sweep(
    scorer: &Scorer<'_>,
    attacks: &[Planned<'_>],
    scored: &Scored,
    model: Subject<'_>,
    weights: &OnnxWeights,
    seed: u64,
) -> Result<Vec<BlockRow>, SweepError> {
    let blocks = weights.blocks()?;
    let members = scorer.members();
    let mut rows = Vec::new();
    for &block in blocks.keys() {
        for (a, perturbation) in attacks.iter().filter_map(|a| a.perturbation.map(|p| (a, p))) {
            let samples = scorer.perturbed(scored, model, weights, (Scope::Block(block), Some(&blocks)), perturbation, seed)?;
            let scores = super::run(a.attack, &samples, &[], &[], &a.params)?;
            let (m, nm) = metrics::by_membership(&scores, &members);
            let auc = metrics::auc_of(&m, &nm);
            status::detail(format!("{}: block {block}: {} AUC {auc:.3}", scored.name, a.name()));
            rows.push(BlockRow { model: scored.name.clone(), block, attack: a.name().into(), auc });
        }
    }
    Ok(rows)
}

