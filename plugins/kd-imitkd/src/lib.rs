//! ImitKD (Lin et al. 2020): every step trains on student-generated responses (replay
//! buffer), forward KL to the teacher.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};

/// The `imitkd` method.
pub struct ImitKd {
    objective: Objective,
    replay_buffer: u32,
}

impl KdMethod for ImitKd {
    const NAME: &'static str = "imitkd";
    const DESCRIPTION: &'static str = "forward KL on student-generated responses";
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("objective", "fkl", "divergence: fkl, rkl, jsd, tvd, sfkl, srkl"),
        ParamSpec::new("beta", "0.9", "student weight in jsd's mixture"),
        ParamSpec::new("alpha", "0.1", "mixture weight of the skew divergences"),
        ParamSpec::new("replay_buffer", "1000", "student samples kept for reuse"),
    ];

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
    use kdharness_plugin_api::kd::instance;

    #[test]
    fn defaults_follow_the_paper_and_can_be_overridden() {
        let m = instance::<ImitKd>(&[]).unwrap();
        assert_eq!(m.objective, Objective::parse("fkl", 0.9, 0.1).unwrap());
        assert!(m.data_policy(0.3).uses_teacher);
        let other = instance::<ImitKd>(&[("objective", "tvd")]).unwrap();
        assert_eq!(other.objective, Objective::Tvd);
        assert!(instance::<ImitKd>(&[("objective", "nope")]).is_err());
    }
}
