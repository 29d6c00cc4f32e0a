//! Test plugin: attacks and KD methods that misbehave in each way the harness must survive.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::{Attack, AttackInput, ParamList, SignalSet, export_plugins};

pub struct Panics;
impl Attack for Panics {
    const NAME: &'static str = "test_panics";
    const DESCRIPTION: &'static str = "panics inside score";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        panic!("deliberate test panic")
    }
}

pub struct NotFinite;
impl Attack for NotFinite {
    const NAME: &'static str = "test_nan";
    const DESCRIPTION: &'static str = "returns NaN for the second sample";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok((0..input.samples.len()).map(|i| if i == 1 { f64::NAN } else { 0.0 }).collect())
    }
}

pub struct TooShort;
impl Attack for TooShort {
    const NAME: &'static str = "test_short";
    const DESCRIPTION: &'static str = "returns one score too few";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok(vec![0.0; input.samples.len().saturating_sub(1)])
    }
}

pub struct Hangs;
impl Attack for Hangs {
    const NAME: &'static str = "test_hangs";
    const DESCRIPTION: &'static str = "never returns";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

pub struct Aborts;
impl Attack for Aborts {
    const NAME: &'static str = "test_aborts";
    const DESCRIPTION: &'static str = "calls abort() (no panic to catch)";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        std::process::abort()
    }
}

pub struct NeedsContinuations;
impl Attack for NeedsContinuations {
    const NAME: &'static str = "test_needs_continuations";
    const DESCRIPTION: &'static str = "reads continuations but never says how many (no Attack::continuations)";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::CONTINUATIONS);
    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Err("never called".into())
    }
}

/// How a KD test method goes wrong, from half-way through training (before that it
/// is forward KL's gradient `softmax(student) − softmax(teacher)`, so the first epoch's
/// checkpoint is a real, finite model).
#[derive(Clone, Copy)]
enum Fault {
    Panic,
    NanLoss,
    NanGrad,
    /// An error from the first step while `KDHTEST_KD_FAIL` is set (the failure that a
    /// fix, unsetting it, removes).
    EnvError,
}

fn kd_step(fault: Fault, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
    let vocab = batch.vocab as usize;
    let mut loss = 0.0;
    for ((s, t), g) in batch.student_logits.chunks(vocab).zip(batch.teacher_logits.chunks(vocab)).zip(grad.chunks_mut(vocab)) {
        let softmax = |x: &[f32]| {
            let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f64> = x.iter().map(|&v| ((v - m) as f64).exp()).collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / z)
        };
        for ((gi, q), p) in g.iter_mut().zip(softmax(s)).zip(softmax(t)) {
            *gi = ((q - p) / batch.positions as f64) as f32;
            loss += p * (p.max(1e-30).ln() - q.max(1e-30).ln()) / batch.positions as f64;
        }
    }
    if let Fault::EnvError = fault {
        if std::env::var_os("KDHTEST_KD_FAIL").is_some() {
            return Err("deliberate failure while KDHTEST_KD_FAIL is set".into());
        }
        return Ok(KdLoss { loss, kl: loss });
    }
    // Training steps only (the held-out objective is computed at progress 1).
    if (0.5..1.0).contains(&batch.progress) {
        match fault {
            Fault::Panic => panic!("deliberate KD test panic"),
            Fault::NanLoss => loss = f64::NAN,
            Fault::NanGrad => grad[0] = f32::NAN,
            Fault::EnvError => unreachable!("handled above"),
        }
    }
    Ok(KdLoss { loss, kl: loss })
}

macro_rules! faulty_kd {
    ($ty:ident, $name:literal, $fault:expr, $what:literal) => {
        pub struct $ty;
        impl KdMethod for $ty {
            const NAME: &'static str = $name;
            const DESCRIPTION: &'static str = $what;
            fn new(_: ParamList<'_>) -> Result<Self, String> {
                Ok($ty)
            }
            fn data_policy(&self, _progress: f64) -> DataPolicy {
                DataPolicy::GROUND_TRUTH
            }
            fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
                kd_step($fault, batch, grad)
            }
        }
    };
}

faulty_kd!(KdPanics, "test_kd_panics", Fault::Panic, "forward KL, then panics half-way");
faulty_kd!(KdNanLoss, "test_kd_nan_loss", Fault::NanLoss, "forward KL, then a NaN loss half-way");
faulty_kd!(KdNanGrad, "test_kd_nan_grad", Fault::NanGrad, "forward KL, then a NaN gradient half-way");
faulty_kd!(KdEnvFails, "test_kd_env_fails", Fault::EnvError, "forward KL; an error while KDHTEST_KD_FAIL is set");

export_plugins!(attacks: [Panics, NotFinite, TooShort, Hangs, Aborts, NeedsContinuations], kd: [KdPanics, KdNanLoss, KdNanGrad, KdEnvFails]);
