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

    /// The released code's SeqKD trained on the ground truth: this fails on that bug.
    #[test]
    fn it_learns_the_teachers_samples_never_the_ground_truth() {
        let seqkd = SeqKd { objective: Objective::Fkl };
        for progress in [0.0, 0.5, 0.99] {
            let policy = seqkd.data_policy(progress);
            assert!(policy.teacher_samples, "SeqKD's targets are the teacher's samples");
            assert!(policy.uses_teacher);
            assert_eq!(policy.student_fraction, 0.0, "no student samples");
            assert_eq!(policy.teacher_mix, 0.0);
        }
    }

    #[test]
    fn objective_parameters_default_to_the_paper_and_can_be_overridden() {
        assert_objective_params::<SeqKd>(Objective::Fkl, |m| m.objective);
    }
}
