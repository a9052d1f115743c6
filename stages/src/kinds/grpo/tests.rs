//! Tests of the `grpo` stage through the engine, on a tiny character-level chat model with the
//! toy reward `reward_contains` (the maths is tested by hand in [`super::math`]; the program
//! reward in [`crate::rl::scorer`]).

use std::sync::atomic::Ordering;

use hone_engine::events::Event;

use super::*;
use crate::testing::chat_bench::{Bench, metrics};
use crate::testing::support::quiet;

/// Iterations of 4 prompts × 4 answers, in 2 minibatches of 8: 2 steps each.
const TOY: &str = "reward_contains: a, num_generations: 4, rollouts: 16, batch_size: 8, max_new_tokens: 8, lr: 1e-2, min_lr: 1e-2, beta: 0.02, eval_prompts: 2";

/// With the toy reward (+1 when the answer contains `a`), a tiny random policy's mean reward
/// rises clearly within a few iterations; every iteration logs TRL's statistics; the output
/// is a chat model and the last rollout.
#[test]
fn a_toy_reward_rises_within_a_few_iterations() {
    let b = Bench::new("grpo");
    let p = b.pipeline(&format!("{TOY}, steps: 24, eval_every: 12"));
    let (summary, _) = b.run(&p, quiet);
    assert!(summary.ok(), "{:?}", summary.failed);
    let out = b.output(&p);
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "metrics.jsonl",
        "loss.svg",
        "grpo.json",
        "rollout.jsonl",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let lines = metrics(&out);
    let iters: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("reward").is_some()).collect();
    assert_eq!(iters.len(), 12, "one rollout line per iteration");
    for l in &iters {
        for k in [
            "reward_std",
            "frac_reward_zero_std",
            "rewards/contains/mean",
            "rewards/contains/std",
            "completions/mean_length",
            "completions/min_length",
            "completions/max_length",
            "completions/clipped_ratio",
        ] {
            assert!(l[k].is_number(), "{k} missing in {l}");
        }
    }
    let ends: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("kl").is_some()).collect();
    assert_eq!(ends.len(), 12, "one line of minibatch averages per iteration");
    for k in ["entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"] {
        assert!(ends.iter().all(|l| l[k].is_number()), "{k}");
    }
    let reward = |ls: &[&serde_json::Value]| {
        ls.iter().map(|l| l["reward"].as_f64().unwrap()).sum::<f64>() / ls.len() as f64
    };
    let (first, last) = (reward(&iters[..2]), reward(&iters[9..]));
    assert!(last > first + 0.3 && last > 0.6, "mean reward {first:.2} -> {last:.2}: {iters:?}");
    // The first step scores the sampler's own tokens: the ratio is 1, nothing is clipped, and
    // the policy is the reference: no KL.
    assert!(ends[0]["kl"].as_f64().unwrap() < 1e-2, "{}", ends[0]);
    assert_eq!(lines.iter().filter(|l| l.get("val_reward").is_some()).count(), 3);
    let rollout: Vec<serde_json::Value> = std::fs::read_to_string(out.join("rollout.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rollout.len(), 16);
    for group in rollout.chunks(4) {
        // Advantages are centred within each group of one prompt.
        assert!(group.iter().all(|r| r["prompt"] == group[0]["prompt"]));
        let sum: f64 = group.iter().map(|r| r["advantage"].as_f64().unwrap()).sum();
        assert!(sum.abs() < 1e-9, "{group:?}");
        for r in group {
            let contains = r["answer"].as_str().unwrap().contains('a');
            assert_eq!(r["reward"].as_f64().unwrap(), f64::from(u8::from(contains)), "{r}");
        }
    }
    let m = crate::model::chat::ChatModel::load(&out).unwrap();
    assert!(m.is_chat);
}

/// Stopped mid-iteration, the next run resumes from the checkpoint (the rollout being trained
/// on included) and ends with the bytes of an uninterrupted run.
#[test]
fn a_stopped_run_resumes_to_the_same_bytes() {
    let with = format!("{TOY}, num_iterations: 2, steps: 12, eval_every: 6, checkpoint_every: 2");
    let whole = Bench::new("grpo");
    let pw = whole.pipeline(&with);
    assert!(whole.run(&pw, quiet).0.ok());
    let b = Bench::new("grpo");
    let p = b.pipeline(&with);
    let (first, _) = b.run(&p, |e, cancel| {
        if let Event::Progress { stage, done: 5, .. } = e
            && stage == "grpo"
        {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert!(!first.ok());
    let (second, events) = b.run(&p, quiet);
    assert!(second.ok(), "{:?}", second.failed);
    let resumed = events.iter().find_map(|e| match e {
        Event::Progress { stage, done, .. } if stage == "grpo" => Some(*done),
        _ => None,
    });
    assert_eq!(resumed, Some(6), "resumed mid-iteration, after step 5");
    let read = |d: std::path::PathBuf, f: &str| std::fs::read(d.join(f)).unwrap();
    for f in ["model.safetensors", "metrics.jsonl", "grpo.json", "rollout.jsonl"] {
        assert_eq!(read(b.output(&p), f), read(whole.output(&pw), f), "{f}");
    }
}

/// Bad params are located errors with what to do; a missing or doubled reward, and a program
/// reward over prompts without answers, stop the run with what to change.
#[test]
fn bad_params_and_rewards_are_clear_errors() {
    let problems = |with: &str| {
        let mut p: Params = serde_yaml::from_str(&format!("{{ {with} }}")).unwrap();
        if p.reward_contains.is_none() && p.reward_program.is_none() {
            p.reward_contains = Some("a".into());
        }
        Grpo::validate(&p)
            .into_iter()
            .map(|e| format!("{} {}", e.message, e.help.unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(problems("num_generations: 1").contains("`num_generations` must be at least 2"));
    let e = problems("num_generations: 6, rollouts: 16, batch_size: 8");
    assert!(e.contains("multiple of `num_generations` (6)"), "{e}");
    let e = problems("rollouts: 16, batch_size: 8, steps: 3");
    assert!(e.contains("whole number of iterations of 2 steps") && e.contains("try 2"), "{e}");
    assert!(problems("temperature: 0").contains("`temperature` must be positive"));
    assert!(problems("beta: -1").contains("`beta` must not be negative"));
    assert!(problems("epsilon: 1.5").contains("`epsilon` must be in (0, 1)"));
    let e = problems("reward_program: check_answer, reward_contains: x");
    assert!(e.contains("GRPO optimises one reward"), "{e}");
    assert!(serde_yaml::from_str::<Params>("{ loss_type: ppo }").is_err());
    assert_eq!(problems(TOY), "");

    let b = Bench::new("grpo");
    let run_err = |with: &str| {
        let p = b.pipeline(with);
        let (summary, _) = b.run(&p, quiet);
        assert!(!summary.ok());
        summary.failed[0].1.clone()
    };
    let toy = TOY.replace("reward_contains: a, ", "");
    let e = run_err(&format!("{toy}, steps: 2"));
    assert!(e.contains("no reward") && e.contains("reward_program: check_answer"), "{e}");
    // The bench's prompts have no `answer`.
    let e = run_err(&format!("{toy}, reward_program: check_answer, steps: 2"));
    assert!(e.contains("needs prompt records with an `answer`"), "{e}");
}

/// A reward model beside a reward program is one reward too many; a reward model that scores
/// NaN stops the stage at the first iteration, naming the answer and what to check.
#[test]
fn a_doubled_reward_and_a_nan_reward_are_clear_errors() {
    let b = Bench::new("grpo");
    b.reward_model(|n| Tensor::full(f32::NAN, (1, n), &Device::Cpu).unwrap(), 0.0);
    let toy = TOY.replace("reward_contains: a, ", "");
    let run_err = |with: &str| {
        let p = b.pipeline_with_rm(&format!("threads: 1, {toy}, steps: 2, {with}"));
        let (summary, _) = b.run(&p, quiet);
        assert!(!summary.ok());
        summary.failed[0].1.clone()
    };
    let e = run_err("reward_program: check_answer");
    assert!(e.contains("GRPO optimises one reward") && e.contains("remove one"), "{e}");
    let e = run_err("eval_every: 0");
    assert!(
        e.starts_with("GRPO stopped at iteration 1: the reward of answer 1 is NaN")
            && e.contains("hone score"),
        "{e}"
    );
}
