//! Tests of the `ppo` stage through the engine, on a tiny character-level chat model with
//! the toy reward `reward_contains` (the maths is tested by hand in [`super::math`]).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use hone_engine::events::Event;
use hone_engine::spec;

use super::*;
use crate::testing::chat_bench::{Bench, metrics};
use crate::testing::support::{self, quiet};

/// Iterations of 2 epochs × 16 answers / 8 per minibatch = 4 steps.
const TOY: &str = "reward_contains: a, rollouts: 16, batch_size: 8, epochs: 2, max_new_tokens: 8, temperature: 1.0, lr: 1e-2, min_lr: 1e-2, kl_coef: 0.02, missing_eos_penalty: 0, eval_prompts: 2";

/// With the toy reward (+1 when the answer contains `a`), a tiny random policy's mean score
/// rises clearly within a few iterations while the KL to the reference stays bounded; every
/// iteration logs TRL's statistics; the output is a chat model.
#[test]
fn a_toy_reward_rises_within_a_few_iterations_at_a_bounded_kl() {
    let b = Bench::new("ppo");
    let p = b.pipeline(&format!("{TOY}, steps: 48, eval_every: 24"));
    let (summary, _) = b.run(&p, quiet);
    assert!(summary.ok(), "{:?}", summary.failed);
    let out = b.output(&p);
    for f in [
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "metrics.jsonl",
        "loss.svg",
        "ppo.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let lines = metrics(&out);
    let iters: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("objective/scores").is_some()).collect();
    assert_eq!(iters.len(), 12, "one rollout line per iteration");
    for l in &iters {
        for k in [
            "objective/kl",
            "objective/entropy",
            "objective/non_score_reward",
            "objective/rlhf_reward",
            "beta",
            "answer_length",
            "val/finished",
        ] {
            assert!(l[k].is_number(), "{k} missing in {l}");
        }
    }
    let ends: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("policy/approxkl_avg").is_some()).collect();
    assert_eq!(ends.len(), 12);
    for k in [
        "policy/clipfrac_avg",
        "loss/policy_avg",
        "loss/value_avg",
        "val/clipfrac_avg",
        "policy/entropy_avg",
        "val/ratio",
    ] {
        assert!(ends.iter().all(|l| l[k].is_number()), "{k}");
    }
    let score = |ls: &[&serde_json::Value]| {
        ls.iter().map(|l| l["objective/scores"].as_f64().unwrap()).sum::<f64>() / ls.len() as f64
    };
    let (first, last) = (score(&iters[..2]), score(&iters[9..]));
    assert!(last > first + 0.3 && last > 0.6, "mean reward {first:.2} -> {last:.2}: {iters:?}");
    let max_kl = iters.iter().map(|l| l["objective/kl"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(max_kl < 10.0, "KL per answer reached {max_kl}");
    // The first minibatch scores the sampler's own tokens: the ratio is 1 (the same
    // temperature in both places), nothing is clipped.
    let step0 = &lines.iter().find(|l| l["step"] == 1 && l.get("loss/policy").is_some()).unwrap();
    assert!(
        step0["policy/approxkl"].as_f64().unwrap() < 1e-6 && step0["policy/clipfrac"] == 0.0,
        "{step0}"
    );
    // Held-out evaluations at 0, 24 and the end.
    assert_eq!(lines.iter().filter(|l| l.get("val_reward").is_some()).count(), 3);
    let m = crate::model::chat::ChatModel::load(&out).unwrap();
    assert!(m.is_chat);
}

/// Stopped mid-iteration, the next run resumes from the checkpoint (the rollout being trained
/// on and the KL controller included) and ends with the bytes of an uninterrupted run.
#[test]
fn a_stopped_run_resumes_to_the_same_bytes() {
    let with = format!(
        "{TOY}, steps: 16, eval_every: 8, checkpoint_every: 4, kl_target: 1.0, kl_horizon: 100"
    );
    let whole = Bench::new("ppo");
    let pw = whole.pipeline(&with);
    assert!(whole.run(&pw, quiet).0.ok());
    let b = Bench::new("ppo");
    let p = b.pipeline(&with);
    let (first, _) = b.run(&p, |e, cancel| {
        if let Event::Progress { stage, done: 6, .. } = e
            && stage == "ppo"
        {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert!(!first.ok());
    let (second, events) = b.run(&p, quiet);
    assert!(second.ok(), "{:?}", second.failed);
    let resumed = events.iter().find_map(|e| {
        if let Event::Progress { stage, done, .. } = e {
            (stage == "ppo").then_some(*done)
        } else {
            None
        }
    });
    assert_eq!(resumed, Some(7), "resumed mid-iteration, after step 6");
    let read = |d: PathBuf, f: &str| std::fs::read(d.join(f)).unwrap();
    for f in ["model.safetensors", "metrics.jsonl", "ppo.json"] {
        assert_eq!(read(b.output(&p), f), read(whole.output(&pw), f), "{f}");
    }
    // β moved (the adaptive controller ran) and is the same.
    let betas: Vec<f64> =
        metrics(&whole.output(&pw)).iter().filter_map(|l| l["beta"].as_f64()).collect();
    assert!(betas.windows(2).any(|w| w[0] != w[1]), "{betas:?}");
}

/// The reference, the critic and the reward model score side by side, and the policy's and
/// the critic's losses are differentiated side by side: one thread or two, the same bytes.
#[test]
fn one_thread_or_two_give_the_same_bytes() {
    let run = |threads: usize| {
        let b = Bench::new("ppo");
        b.reward_model(
            |n| {
                Tensor::arange(0u32, n as u32, &Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .affine(0.01, -0.1)
                    .unwrap()
                    .reshape((1, n))
                    .unwrap()
            },
            0.5,
        );
        let p = b.pipeline_with_rm(&format!(
            "threads: {threads}, {}, steps: 8, eval_every: 0",
            TOY.replace("reward_contains: a, ", "")
        ));
        let (summary, _) = b.run(&p, quiet);
        assert!(summary.ok(), "{:?}", summary.failed);
        let out = support::output(b.dir.path(), &p, "ppo");
        ["model.safetensors", "metrics.jsonl", "ppo.json"]
            .map(|f| std::fs::read(out.join(f)).unwrap())
    };
    let (one, two) = (run(1), run(2));
    for (f, (a, b)) in
        ["model.safetensors", "metrics.jsonl", "ppo.json"].iter().zip(one.iter().zip(&two))
    {
        assert!(a == b, "{f} differs between 1 and 2 threads");
    }
}

/// A KL blow-up stops the stage, naming the iteration and what to change.
#[test]
fn a_kl_blow_up_stops_with_the_iteration_and_what_to_change() {
    let b = Bench::new("ppo");
    let p = b.pipeline(&format!(
        "{}, lr: 0.2, min_lr: 0.2, steps: 16, max_kl: 0.5, eval_every: 0",
        TOY.replace(", lr: 1e-2, min_lr: 1e-2", "")
    ));
    let (summary, _) = b.run(&p, quiet);
    assert!(!summary.ok());
    let err = &summary.failed[0].1;
    assert!(
        err.contains("PPO stopped at iteration")
            && err.contains("max_kl")
            && err.contains("kl_coef")
            && err.contains("lower `lr`"),
        "{err}"
    );
    assert!(
        !err.contains("iteration 1:"),
        "the first iteration samples from the reference itself: {err}"
    );
}

/// A reward model that scores NaN (the SFT model's backbone, a NaN score head) stops the stage
/// at the first iteration, naming the answer and what to check.
#[test]
fn a_nan_score_stops_with_the_iteration_and_what_to_check() {
    let b = Bench::new("ppo");
    b.reward_model(|n| Tensor::full(f32::NAN, (1, n), &Device::Cpu).unwrap(), 0.0);
    let p = b.pipeline_with_rm(&format!(
        "threads: 1, {}, steps: 8, eval_every: 0",
        TOY.replace("reward_contains: a, ", "")
    ));
    let (summary, _) = b.run(&p, quiet);
    assert!(!summary.ok());
    let err = &summary.failed[0].1;
    assert!(
        err.starts_with("PPO stopped at iteration 1: the score of answer 1 is NaN")
            && err.contains("hone score"),
        "{err}"
    );
}

/// Steps so large that the policy's weights overflow: the stage stops at the first non-finite
/// loss with the iteration and step and what to change, instead of training on NaN.
#[test]
fn a_nan_blow_up_stops_with_the_iteration_and_what_to_change() {
    let b = Bench::new("ppo");
    let p = b.pipeline(&format!(
        "{}, lr: 1e30, min_lr: 1e30, steps: 8, max_kl: 1e300, eval_every: 0",
        TOY.replace(", lr: 1e-2, min_lr: 1e-2", "")
    ));
    let (summary, _) = b.run(&p, quiet);
    assert!(!summary.ok());
    let err = &summary.failed[0].1;
    // The first step moves every weight by about `lr`; the second minibatch's loss is NaN.
    assert!(
        err.starts_with("PPO diverged at iteration 1 (step 2): the policy loss is NaN")
            && err.contains("lower `lr` (now 1e30)"),
        "{err}"
    );
}

#[test]
fn bad_params_and_wiring_are_explained() {
    let b = Bench::new("ppo");
    let load = |with: &str| {
        let src = format!(
            "name: t\nstages:\n  m: {{ uses: command, with: {{ cmd: 'true' }} }}\n  ppo:\n    uses: ppo\n    inputs: {{ model: m, prompts: m }}\n    with: {{ {with} }}\n"
        );
        spec::load_str(&b.dir.path().join("p.yaml"), src, &crate::registry(), &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let err = load("rollouts: 10, batch_size: 4");
    assert!(err.contains("`rollouts` (10) must be a multiple of `batch_size` (4)"), "{err}");
    let err = load("rollouts: 16, batch_size: 8, epochs: 2, steps: 10");
    assert!(
        err.contains("whole number of iterations of 4 steps") && err.contains("try 8"),
        "{err}"
    );
    let err = load("kl_target: -1");
    assert!(err.contains("`kl_target` must be positive"), "{err}");
    let err = load("kl_estimator: k2");
    assert!(err.contains("kl_estimator"), "{err}");
    assert!(load("").is_empty());

    // No reward at all: a clear error at run time.
    let p = b.pipeline("rollouts: 16, batch_size: 8, epochs: 2, steps: 4, max_new_tokens: 8");
    let (summary, _) = b.run(&p, quiet);
    let err = &summary.failed[0].1;
    assert!(err.contains("no reward") && err.contains("reward_contains"), "{err}");
    // Answers too long for the context.
    let p = b.pipeline(
        "reward_contains: a, rollouts: 16, batch_size: 8, epochs: 2, steps: 4, max_new_tokens: 30",
    );
    let (summary, _) = b.run(&p, quiet);
    let err = &summary.failed[0].1;
    assert!(err.contains("max_new_tokens"), "{err}");
}

/// The reference's log-probs, the critic, the reward model and the update run the model ops,
/// whose last bits `HONE_PLAIN_OPS` changes: the setting is in the key, as for the other
/// kinds that run them.
#[test]
fn plain_ops_are_in_the_key() {
    use crate::model::ops::with_plain_ops;
    assert!(
        with_plain_ops(false, Ppo::settings).is_empty(),
        "keys stay as they were when it is not set"
    );
    assert_eq!(with_plain_ops(true, Ppo::settings), [("HONE_PLAIN_OPS", "1".to_string())]);
}
