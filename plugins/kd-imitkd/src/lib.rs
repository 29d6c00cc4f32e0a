//! ImitKD (Lin et al. 2020): every step trains on student-generated responses (replay
//! buffer), forward KL to the teacher.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod, REPLAY_BUFFER};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins, objective_params};

/// The `imitkd` method.
pub struct ImitKd {
    objective: Objective,
    replay_buffer: u32,
}

impl KdMethod for ImitKd {
    const NAME: &'static str = "imitkd";
    const DESCRIPTION: &'static str = "forward KL on student-generated responses";
    const PARAMS: &'static [ParamSpec] = objective_params!(
        "fkl",
        REPLAY_BUFFER,
    );

    fn new(params: ParamList<'_>) -> Result<Self, String> {
        Ok(ImitKd { objective: Objective::from_params(params)?, replay_buffer: params.count("replay_buffer")? })
    }

    fn data_policy(&self, _progress: f64) -> DataPolicy {
        DataPolicy { student_fraction: 1.0, replay_buffer: self.replay_buffer, ..DataPolicy::GROUND_TRUTH }
    }

    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
        Ok(self.objective.loss_and_grad(batch, grad))
    }
}

export_plugins!(kd: [ImitKd]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::kd::assert_objective_params;

    #[test]
    fn objective_parameters_default_to_the_paper_and_can_be_overridden() {
        assert_objective_params::<ImitKd>(Objective::Fkl, |m| m.objective);
    }
}
