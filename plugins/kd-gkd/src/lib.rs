//! GKD (Agarwal et al. 2024): with probability λ a step trains on student-generated
//! responses (from a replay buffer), else on the ground truth; generalized JSD (β = 0.9).

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};

/// The `gkd` method.
pub struct Gkd {
    objective: Objective,
    lambda: f64,
    replay_buffer: u32,
}

impl KdMethod for Gkd {
    const NAME: &'static str = "gkd";
    const DESCRIPTION: &'static str = "generalized JSD on a mix of student samples and ground truth";
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("objective", "jsd", "divergence: fkl, rkl, jsd, tvd, sfkl, srkl"),
        ParamSpec::new("beta", "0.9", "student weight in jsd's mixture"),
        ParamSpec::new("alpha", "0.1", "mixture weight of the skew divergences"),
        ParamSpec::new("lambda", "0.5", "probability of a step on student samples"),
        ParamSpec::new("replay_buffer", "1000", "student samples kept for reuse"),
    ];

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
    use kdharness_plugin_api::kd::instance;

    #[test]
    fn defaults_follow_the_paper_and_can_be_overridden() {
        let m = instance::<Gkd>(&[]).unwrap();
        assert_eq!(m.objective, Objective::parse("jsd", 0.9, 0.1).unwrap());
        assert!(m.data_policy(0.3).uses_teacher);
        let other = instance::<Gkd>(&[("objective", "tvd")]).unwrap();
        assert_eq!(other.objective, Objective::Tvd);
        assert!(instance::<Gkd>(&[("objective", "nope")]).is_err());
    }
}
