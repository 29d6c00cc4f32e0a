//! GKD (Agarwal et al. 2024): with probability λ a step trains on student-generated
//! responses (from a replay buffer), else on the ground truth; generalized JSD (β = 0.9).

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod, REPLAY_BUFFER};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins, objective_params};

/// The `gkd` method.
pub struct Gkd {
    objective: Objective,
    lambda: f64,
    replay_buffer: u32,
}

impl KdMethod for Gkd {
    const NAME: &'static str = "gkd";
    const DESCRIPTION: &'static str = "generalized JSD on a mix of student samples and ground truth";
    const PARAMS: &'static [ParamSpec] = objective_params!(
        "jsd",
        ParamSpec::new("lambda", "0.5", "probability of a step on student samples"),
        REPLAY_BUFFER,
    );

    fn new(params: ParamList<'_>) -> Result<Self, String> {
        Ok(Gkd { objective: Objective::from_params(params)?, lambda: params.probability("lambda")?, replay_buffer: params.count("replay_buffer")? })
    }

    fn data_policy(&self, _progress: f64) -> DataPolicy {
        DataPolicy { student_fraction: self.lambda, replay_buffer: self.replay_buffer, ..DataPolicy::GROUND_TRUTH }
    }

    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
        Ok(self.objective.loss_and_grad(batch, grad))
    }
}

export_plugins!(kd: [Gkd]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::kd::assert_objective_params;

    #[test]
    fn objective_parameters_default_to_the_paper_and_can_be_overridden() {
        assert_objective_params::<Gkd>(Objective::Jsd(0.9), |m| m.objective);
    }
}
