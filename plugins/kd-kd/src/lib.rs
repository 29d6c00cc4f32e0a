//! KD (Hinton et al. 2015, as the paper's code): forward KL to the teacher on the
//! ground-truth public responses.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins, objective_params};

/// The `kd` method.
pub struct Kd {
    objective: Objective,
}

impl KdMethod for Kd {
    const NAME: &'static str = "kd";
    const DESCRIPTION: &'static str = "forward KL on ground-truth responses";
    const PARAMS: &'static [ParamSpec] = objective_params!("fkl");

    fn new(params: ParamList<'_>) -> Result<Self, String> {
        Ok(Kd { objective: Objective::from_params(params)? })
    }

    fn data_policy(&self, _progress: f64) -> DataPolicy {
        DataPolicy::GROUND_TRUTH
    }

    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
        Ok(self.objective.loss_and_grad(batch, grad))
    }
}

export_plugins!(kd: [Kd]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::kd::assert_objective_params;

    #[test]
    fn objective_parameters_default_to_the_paper_and_can_be_overridden() {
        assert_objective_params::<Kd>(Objective::Fkl, |m| m.objective);
    }
}
