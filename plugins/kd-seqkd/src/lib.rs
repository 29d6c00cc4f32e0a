//! SeqKD (Kim & Rush 2016): the student learns the TEACHER's sampled responses (T = 1) to
//! the public prompts, generated once and cached by the harness; the released code's bug
//! of training on the ground truth instead is not copied.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins, objective_params};

/// The `seqkd` method.
pub struct SeqKd {
    objective: Objective,
}

impl KdMethod for SeqKd {
    const NAME: &'static str = "seqkd";
    const DESCRIPTION: &'static str = "forward KL on the teacher's sampled responses";
    const PARAMS: &'static [ParamSpec] = objective_params!("fkl");

    fn new(params: ParamList<'_>) -> Result<Self, String> {
        Ok(SeqKd { objective: Objective::from_params(params)? })
    }

    fn data_policy(&self, _progress: f64) -> DataPolicy {
        DataPolicy { teacher_samples: true, ..DataPolicy::GROUND_TRUTH }
    }

    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
        Ok(self.objective.loss_and_grad(batch, grad))
    }
}

export_plugins!(kd: [SeqKd]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::kd::assert_objective_params;

    #[test]
    fn objective_parameters_default_to_the_paper_and_can_be_overridden() {
        assert_objective_params::<SeqKd>(Objective::Fkl, |m| m.objective);
    }
}
