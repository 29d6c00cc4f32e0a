//! SeqKD (Kim & Rush 2016): the student learns the TEACHER's sampled responses (T = 1) to
//! the public prompts, generated once and cached by the harness; the released code's bug
//! of training on the ground truth instead is not copied.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};

/// The `seqkd` method.
pub struct SeqKd {
    objective: Objective,
}

impl KdMethod for SeqKd {
    const NAME: &'static str = "seqkd";
    const DESCRIPTION: &'static str = "forward KL on the teacher's sampled responses";
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("objective", "fkl", "divergence: fkl, rkl, jsd, tvd, sfkl, srkl"),
        ParamSpec::new("beta", "0.9", "student weight in jsd's mixture"),
        ParamSpec::new("alpha", "0.1", "mixture weight of the skew divergences"),
    ];

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
    use kdharness_plugin_api::kd::instance;

    #[test]
    fn defaults_follow_the_paper_and_can_be_overridden() {
        let m = instance::<SeqKd>(&[]).unwrap();
        assert_eq!(m.objective, Objective::parse("fkl", 0.9, 0.1).unwrap());
        assert!(m.data_policy(0.3).uses_teacher);
        let other = instance::<SeqKd>(&[("objective", "tvd")]).unwrap();
        assert_eq!(other.objective, Objective::Tvd);
        assert!(instance::<SeqKd>(&[("objective", "nope")]).is_err());
    }
}
