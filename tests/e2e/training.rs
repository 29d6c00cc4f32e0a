//! Supervised fine-tuning (SPEC §6): a tiny llama trained on the members memorizes them
//! (their loss falls far below the non-members'), and one seed gives bit-identical weights.

use candle_core::Device;
use kdharness::model::Model;
use kdharness::train::{TrainConfig, evaluate, train};

use crate::distill::{examples, scratch};

fn tiny_llama(seed: u64) -> Model {
    scratch(2, 64, seed)
}

fn weights(model: &Model) -> Vec<(String, Vec<f32>)> {
    model.params.iter().map(|(n, v)| (n.to_owned(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

#[test]
fn fine_tuning_memorizes_members_and_is_deterministic() {
    let members = examples("members.jsonl", "m");
    let nonmembers = examples("nonmembers.jsonl", "n");
    let cfg = TrainConfig { epochs: 80, lr: 3e-3, batch_size: 4, warmup_steps: 10, ..TrainConfig::default() };

    let mut model = tiny_llama(11);
    let before = (evaluate(&model, &members, 8).unwrap(), evaluate(&model, &nonmembers, 8).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let log = train(&mut model, &members, &cfg, 5, "teacher", Some(dir.path())).unwrap();
    let after = (evaluate(&model, &members, 8).unwrap(), evaluate(&model, &nonmembers, 8).unwrap());
    eprintln!("member/non-member loss before {before:?}, after {after:?}; epoch losses {:?}", log.iter().map(|l| l.train_loss).collect::<Vec<_>>());
    assert_eq!(log.len(), 80);
    assert!(log.last().unwrap().train_loss < log[0].train_loss / 4.0, "training loss did not fall");
    // Memorization: members become far more likely than unseen records.
    assert!(after.0 < 0.5, "member loss {}", after.0);
    assert!(after.1 > after.0 + 2.0, "non-member loss {} vs member {}", after.1, after.0);

    // The checkpoint on disk is the last epoch's model, in Hugging Face layout.
    let saved = Model::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(weights(&saved), weights(&model));

    // Same seed, same thread count: bit-identical weights.
    let mut again = tiny_llama(11);
    train(&mut again, &members, &cfg, 5, "teacher", None).unwrap();
    assert_eq!(weights(&again), weights(&model), "two runs with one seed differ");
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let members = examples("members.jsonl", "m");
    let mut model = tiny_llama(3);
    let dir = tempfile::tempdir().unwrap();
    // An absurd learning rate blows the weights up within a few epochs.
    let cfg = TrainConfig { epochs: 30, lr: 1e9, grad_clip: 0.0, batch_size: 12, ..TrainConfig::default() };
    let err = train(&mut model, &members, &cfg, 1, "teacher", Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("the loss became") && err.contains("last good checkpoint"), "{err}");
    let kept = Model::load(dir.path(), &Device::Cpu).unwrap();
    assert!(weights(&kept).iter().all(|(_, w)| w.iter().all(|x| x.is_finite())));
}
