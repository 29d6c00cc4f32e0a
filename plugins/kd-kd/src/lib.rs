//! KD (Hinton et al. 2015, as the paper's code): forward KL to the teacher on the
//! ground-truth public responses.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};

/// The `kd` method.
pub struct Kd {
    objective: Objective,
}

impl KdMethod for Kd {
    const NAME: &'static str = "kd";
    const DESCRIPTION: &'static str = "forward KL on ground-truth responses";
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("objective", "fkl", "divergence: fkl, rkl, jsd, tvd, sfkl, srkl"),
        ParamSpec::new("beta", "0.9", "student weight in jsd's mixture"),
        ParamSpec::new("alpha", "0.1", "mixture weight of the skew divergences"),
    ];

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
    use kdharness_plugin_api::kd::instance;

    #[test]
    fn defaults_follow_the_paper_and_can_be_overridden() {
        let m = instance::<Kd>(&[]).unwrap();
        assert_eq!(m.objective, Objective::parse("fkl", 0.9, 0.1).unwrap());
        assert!(m.data_policy(0.3).uses_teacher);
        let other = instance::<Kd>(&[("objective", "tvd")]).unwrap();
        assert_eq!(other.objective, Objective::Tvd);
        assert!(instance::<Kd>(&[("objective", "nope")]).is_err());
    }
}
