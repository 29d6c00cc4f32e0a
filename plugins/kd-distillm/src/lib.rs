//! DistiLLM (Ko et al. 2024): skew reverse KL (α = 0.1) with adaptive off-policy
//! sampling: a step trains on student samples (replay buffer) with probability
//! `τ·(1 − progress)`, and `τ` rises by `tau_step` after an epoch whose validation loss did
//! not improve on the best by at least `loss_eps`.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod, REPLAY_BUFFER};
use kdharness_plugin_api::objectives::Objective;
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins, objective_params};

/// The `distillm` method and its schedule state.
pub struct DistiLlm {
    objective: Objective,
    tau: f64,
    tau_step: f64,
    loss_eps: f64,
    replay_buffer: u32,
    best: f64,
}

impl KdMethod for DistiLlm {
    const NAME: &'static str = "distillm";
    const DESCRIPTION: &'static str = "skew reverse KL with an adaptive share of student samples";
    const PARAMS: &'static [ParamSpec] = objective_params!(
        "srkl",
        ParamSpec::new("tau", "0.0", "initial student-sample probability"),
        ParamSpec::new("tau_step", "0.1", "increase of tau when validation loss stalls"),
        ParamSpec::new("loss_eps", "0.1", "improvement below which validation loss counts as stalled"),
        REPLAY_BUFFER,
    );

    fn new(params: ParamList<'_>) -> Result<Self, String> {
        Ok(DistiLlm {
            objective: Objective::from_params(params)?,
            tau: params.probability("tau")?,
            tau_step: params.probability("tau_step")?,
            loss_eps: params.f64("loss_eps")?,
            replay_buffer: params.count("replay_buffer")?,
            best: f64::INFINITY,
        })
    }

    fn data_policy(&self, progress: f64) -> DataPolicy {
        let student_fraction = self.tau * (1.0 - progress.clamp(0.0, 1.0));
        DataPolicy { student_fraction, replay_buffer: self.replay_buffer, ..DataPolicy::GROUND_TRUTH }
    }

    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
        Ok(self.objective.loss_and_grad(batch, grad))
    }

    fn on_epoch_end(&mut self, val_loss: f64) -> Result<(), String> {
        if self.best.is_finite() && self.best - val_loss < self.loss_eps {
            self.tau = (self.tau + self.tau_step).min(1.0);
        }
        self.best = self.best.min(val_loss);
        Ok(())
    }
}

export_plugins!(kd: [DistiLlm]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::kd::{assert_objective_params, instance};

    #[test]
    fn objective_parameters_default_to_the_paper_and_can_be_overridden() {
        assert_objective_params::<DistiLlm>(Objective::Srkl(0.1), |m| m.objective);
    }

    #[test]
    fn tau_rises_only_when_validation_loss_stalls() {
        let mut m = instance::<DistiLlm>(&[]).unwrap();
        assert_eq!(m.data_policy(0.0).student_fraction, 0.0);
        m.on_epoch_end(3.0).unwrap(); // first epoch: sets the best
        m.on_epoch_end(2.5).unwrap(); // improved by 0.5 >= 0.1: no change
        assert_eq!(m.tau, 0.0);
        m.on_epoch_end(2.45).unwrap(); // improved by 0.05 < 0.1: stalled
        assert!((m.tau - 0.1).abs() < 1e-12);
        m.on_epoch_end(2.6).unwrap(); // worse: stalled again
        assert!((m.tau - 0.2).abs() < 1e-12);
        // The probability decays linearly with progress.
        assert!((m.data_policy(0.5).student_fraction - 0.1).abs() < 1e-12);
    }
}
