//! No-KD baseline: supervised fine-tuning of the student on the public split, without a
//! teacher (the paper's floor: its AUC should sit near 0.5).

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::cross_entropy;
use kdharness_plugin_api::{ParamList, export_plugins};

/// The `nokd` baseline.
pub struct NoKd;

impl KdMethod for NoKd {
    const NAME: &'static str = "nokd";
    const DESCRIPTION: &'static str = "no teacher: cross-entropy on ground-truth responses (baseline)";

    fn new(_params: ParamList<'_>) -> Result<Self, String> {
        Ok(NoKd)
    }

    fn data_policy(&self, _progress: f64) -> DataPolicy {
        DataPolicy { uses_teacher: false, ..DataPolicy::GROUND_TRUTH }
    }

    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
        Ok(cross_entropy(batch, grad))
    }
}

export_plugins!(kd: [NoKd]);
