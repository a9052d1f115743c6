//! Tests of the `reward` stage: the loss by hand, and through the engine on a tiny
//! character-level model that must learn which answers hold a keyword.

use std::path::Path;
use std::sync::atomic::Ordering;

use hone_engine::events::Event;
use hone_engine::spec;

use super::*;
use crate::data::rankings::{self, Ranking};
use crate::model::chat_template::test_tokenizer;
use crate::rl::preferences::{example, held_out};
use crate::rl::reward_model::{ScoreError, Scorer, conversation, sigmoid};
use crate::testing::keyword::{Bench, KEYWORD, rankings};
use crate::testing::support::{self, quiet};

fn metric_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The loss and its gradient for three scores and three weighted pairs, against the
/// formulas worked by hand: `L = Σ wᵢ·ln(1 + e^(−dᵢ)) + c·mean((r_b + r_w)²)`,
/// `∂L/∂dᵢ = −wᵢ·σ(−dᵢ)`, `∂(c·mean(s²))/∂r = 2c·s/P` for both scores of a pair.
#[test]
fn the_pairwise_loss_and_its_gradient_match_a_hand_computation() {
    let r = [1.0f64, -0.5, 2.0];
    let pairs = [(0, 1), (2, 1), (2, 0)];
    let w = [0.5, 0.25, 0.25];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    for center in [0.0, 0.1] {
        let scores = Var::from_slice(&r, 3, &Device::Cpu).unwrap();
        let loss = pairwise_loss(scores.as_tensor(), &pairs, &w, center).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(scores.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        // d = 1.5, 2.5, 1.0.
        let mut want_loss = 0.5 * (1.0 + (-1.5f64).exp()).ln()
            + 0.25 * (1.0 + (-2.5f64).exp()).ln()
            + 0.25 * (1.0 + (-1.0f64).exp()).ln();
        let mut want = [
            -0.5 * sig(-1.5) + 0.25 * sig(-1.0),
            0.5 * sig(-1.5) + 0.25 * sig(-2.5),
            -0.25 * sig(-2.5) - 0.25 * sig(-1.0),
        ];
        // Sums of the pairs' scores: 0.5, 1.5, 3.0.
        want_loss += center * (0.25 + 2.25 + 9.0) / 3.0;
        let c = 2.0 * center / 3.0;
        want[0] += c * (0.5 + 3.0);
        want[1] += c * (0.5 + 1.5);
        want[2] += c * (1.5 + 3.0);
        assert!((loss.to_scalar::<f64>().unwrap() - want_loss).abs() < 1e-12, "center {center}");
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "center {center}: gradient {g:?}, want {want:?}");
        }
    }
    // Stable far from zero: a pair ranked right by 100 costs nothing, wrong by 100 costs 100.
    let far = Tensor::new(&[100.0f32, 0.0], &Device::Cpu).unwrap();
    let right = pairwise_loss(&far, &[(0, 1)], &[1.0], 0.0).unwrap().to_scalar::<f32>().unwrap();
    let wrong = pairwise_loss(&far, &[(1, 0)], &[1.0], 0.0).unwrap().to_scalar::<f32>().unwrap();
    assert!((0.0..1e-30).contains(&right) && (wrong - 100.0).abs() < 1e-4, "{right} {wrong}");
}

#[test]
fn rankings_become_examples_with_every_pair_and_long_answers_left_out() {
    let (json, vocab) = test_tokenizer("abcdefghijklmnopqrstuvwxyz?");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
    let tok = ChatTokenizer::from_file(&dir.path().join("tokenizer.json"), vocab).unwrap();
    let r = Ranking {
        prompt: "q?".into(),
        responses: vec!["a".into(), "b".repeat(40), "c".into(), "d".into()],
        ranking: vec![vec![2], vec![0, 1], vec![3]],
    };
    let mut too_long = 0;
    let e = example(&tok, &r, 48, &mut too_long).unwrap().unwrap();
    // Response 1 is dropped: rows are 0, 2, 3 → 0, 1, 2; pairs 2>0, 2>3, 0>3 (not 2>1, 1>3).
    assert_eq!(too_long, 1);
    assert_eq!(e.rows.len(), 3);
    assert_eq!(e.pairs, vec![(1, 0), (1, 2), (0, 2)]);
    assert_eq!(e.responses, vec![0, 2, 3]);
    assert_eq!(e.start, tok.encode(&conversation("q?", "")[..1], true).unwrap().ids.len());
    assert_eq!(e.rows[0], tok.encode(&conversation("q?", "a"), false).unwrap().ids);
    let tied = Ranking {
        prompt: "q?".into(),
        responses: vec!["a".into(), "b".into()],
        ranking: vec![vec![0, 1]],
    };
    assert_eq!(example(&tok, &tied, 48, &mut too_long).unwrap(), None);
    // The split holds out whole prompts: the same share, seeded.
    let rs: Vec<Ranking> = (0..20)
        .flat_map(|i| {
            [
                Ranking::preference(format!("p{i}"), "a", "b"),
                Ranking::preference(format!("p{i}"), "c", "d"),
            ]
        })
        .collect();
    let held = held_out(&rs, 0.25, 1);
    assert_eq!(held.len(), 5);
    assert_eq!(held, held_out(&rs, 0.25, 1));
    assert_ne!(held, held_out(&rs, 0.25, 2));
    assert_eq!(held_out(&rs[..2], 0.5, 1).len(), 0, "one prompt: never all held out");
    assert_eq!(held_out(&rs, 0.01, 1).len(), 1, "at least one");
}

/// The goal of the issue: a tiny reward model learns a separable preference (answers holding
/// a keyword are better) to ~100% accuracy on held-out prompts; and the outputs a user and
/// PPO need are there.
#[test]
fn a_tiny_reward_model_learns_a_keyword_preference_on_held_out_prompts() {
    let b = Bench::new("reward", &rankings(48, 1));
    let p = b.pipeline("batch_size: 4, steps: 150, lr: 3e-3, min_lr: 3e-4, warmup_steps: 10, eval_every: 50, val_fraction: 0.25");
    let (summary, events) = b.run(&p, quiet);
    assert!(summary.ok(), "{:?}", summary.failed);
    let out = b.output(&p);
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "metrics.jsonl",
        "loss.svg",
        "data.json",
        REWARD_JSON,
        VAL_PAIRS,
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let lines = metric_lines(&out);
    let evals: Vec<f64> = lines.iter().filter_map(|l| l["val_accuracy"].as_f64()).collect();
    assert_eq!(evals.len(), 4, "evaluations at 0, 50, 100 and the end: {evals:?}");
    assert!(evals[3] >= 0.97, "held-out pair accuracy {evals:?}");
    let steps: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("grad_norm").is_some()).collect();
    assert_eq!(steps.len(), 150);
    let keys: Vec<&str> = steps[0].as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "step",
        "loss",
        "accuracy",
        "margin",
        "rewards/chosen",
        "rewards/rejected",
        "lr",
        "grad_norm",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let last = lines.iter().rev().find(|l| l.get("val_margin").is_some()).unwrap();
    assert!(
        last["val_margin"].as_f64().unwrap() > 1.0
            && last["val_chosen"].as_f64() > last["val_rejected"].as_f64(),
        "{last}"
    );
    // 12 of 48 prompts held out; a prompt with one good answer gives 3 pairs, with two 4.
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data.json")).unwrap()).unwrap();
    assert_eq!(
        (data["prompts"].as_u64(), data["val_prompts"].as_u64(), data["too_long"].as_u64()),
        (Some(48), Some(12), Some(0)),
        "{data}"
    );
    assert_eq!(
        data["train_pairs"].as_u64().unwrap() + data["val_pairs"].as_u64().unwrap(),
        24 * 3 + 24 * 4
    );
    let finished = support::finished_metrics(&events, "reward");
    assert_eq!(finished["val_accuracy"].as_f64(), Some(evals[3]));
    // val_pairs.jsonl: each held-out pair with its scores, as `Scorer` gives them; the share
    // ranked right is the final val_accuracy.
    let pairs: Vec<serde_json::Value> = std::fs::read_to_string(out.join(VAL_PAIRS))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pairs.len() as u64, data["val_pairs"].as_u64().unwrap());
    let right =
        pairs.iter().filter(|p| p["better_score"].as_f64() > p["worse_score"].as_f64()).count();
    assert_eq!(right as f64 / pairs.len() as f64, evals[3]);
    assert!(
        pairs.iter().all(|p| p["better"].as_str().unwrap().contains(KEYWORD)
            && !p["worse"].as_str().unwrap().contains(KEYWORD)),
        "{pairs:?}"
    );
    let scorer_ = Scorer::load(&out).unwrap();
    let s = scorer_
        .score(pairs[0]["prompt"].as_str().unwrap(), pairs[0]["better"].as_str().unwrap())
        .unwrap();
    assert!((s - pairs[0]["better_score"].as_f64().unwrap()).abs() < 1e-4, "{s} vs {}", pairs[0]);
    // The reward model scores new answers: the keyword wins; σ(r) is in (0, 1).
    let scorer = Scorer::load(&out).unwrap();
    let (good, bad) =
        (scorer.score("zz?", "abcokde").unwrap(), scorer.score("zz?", "abcfhde").unwrap());
    assert!(good > bad, "{good} vs {bad}");
    assert!(sigmoid(good) > 0.0 && sigmoid(good) < 1.0);
    assert!(matches!(scorer.score("zz?", "  "), Err(ScoreError::EmptyAnswer)));
    assert!(matches!(
        scorer.score("zz?", &"a".repeat(60)),
        Err(ScoreError::TooLong { block_size: 48, .. })
    ));
    // reward.json: the mean score of the rankings' answers, as `Scorer` gives them.
    let rj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(REWARD_JSON)).unwrap()).unwrap();
    assert_eq!(rj["responses"], 48 * 4);
    let all: Vec<f64> = rankings(48, 1)
        .iter()
        .flat_map(|r| {
            r.responses.iter().map(|a| scorer.score(&r.prompt, a).unwrap()).collect::<Vec<_>>()
        })
        .collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!((rj["reference_mean"].as_f64().unwrap() - mean).abs() < 1e-4, "{rj} vs {mean}");
    // The HF layout of a sequence classifier.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(cfg["id2label"].as_object().unwrap().len(), 1);
    assert_eq!(cfg["pad_token_id"], 0);
    let w = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(w["score.weight"].dims(), &[1, 32]);
    // A reward model is not a language model, and the other way round.
    let err = export::load(&out, DType::F32).err().unwrap().to_string();
    assert!(err.contains("a reward model") && err.contains("hone score"), "{err}");
    let err = Scorer::load(&b.dir.path().join("base")).err().unwrap().to_string();
    assert!(err.contains("not a reward model") && err.contains("GPT2LMHeadModel"), "{err}");
}

/// Stopped mid-run, the next run resumes from its checkpoint and ends with the bytes of an
/// uninterrupted run (dropout on, so the RNG matters too).
#[test]
fn a_stopped_run_resumes_to_identical_bytes() {
    let rs = rankings(16, 2);
    let with = "batch_size: 2, steps: 12, eval_every: 4, checkpoint_every: 4, dropout: 0.1, lr: 1e-3, center_rewards: 0.01";
    let whole = Bench::new("reward", &rs);
    let pw = whole.pipeline(with);
    assert!(whole.run(&pw, quiet).0.ok());
    let b = Bench::new("reward", &rs);
    let p = b.pipeline(with);
    let (first, _) = b.run(&p, |e, cancel| {
        if let Event::Progress { stage, done: 6, .. } = e
            && stage == "reward"
        {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert!(!first.ok());
    let (second, events) = b.run(&p, quiet);
    assert!(second.ok(), "{:?}", second.failed);
    let resumed = events.iter().find_map(|e| {
        if let Event::Progress { stage, done, .. } = e {
            (stage == "reward").then_some(*done)
        } else {
            None
        }
    });
    assert_eq!(resumed, Some(7));
    for f in ["model.safetensors", "metrics.jsonl", REWARD_JSON, "config.json"] {
        assert_eq!(
            std::fs::read(b.output(&p).join(f)).unwrap(),
            std::fs::read(whole.output(&pw).join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn bad_rankings_and_params_are_located() {
    let b = Bench::new("reward", &rankings(4, 3));
    let good = std::fs::read_to_string(b.dir.path().join("rank").join(rankings::FILE)).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[2] = r#"{"prompt": "x?", "responses": ["a", "b"], "ranking": [[0], [2]]}"#;
    std::fs::write(b.dir.path().join("rank").join(rankings::FILE), lines.join("\n")).unwrap();
    let (summary, _) = b.run(&b.pipeline("steps: 2"), quiet);
    let (stage, err, _) = &summary.failed[0];
    assert_eq!(stage, "reward");
    assert!(
        err.contains("input `rankings`")
            && err.contains("rankings.jsonl:3:")
            && err.contains("names response 2"),
        "{err}"
    );
    // No pair at all: all tied.
    let tied: Vec<Ranking> = (0..3)
        .map(|i| Ranking {
            prompt: format!("p{i}").into(),
            responses: vec!["a".into(), "b".into()],
            ranking: vec![vec![0, 1]],
        })
        .collect();
    let b = Bench::new("reward", &tied);
    let (summary, _) = b.run(&b.pipeline("steps: 2"), quiet);
    assert!(
        summary.failed[0].1.contains("no ranking of input `rankings` gives a training pair"),
        "{:?}",
        summary.failed
    );
    // Params, at load time.
    let src = "name: t\nstages:\n  m: { uses: command, with: { cmd: 'true' } }\n  reward:\n    uses: reward\n    inputs: { model: m, rankings: m }\n    with: { val_fraction: 1.5, center_rewards: -1, lr: 0, likelihood: -1 }\n";
    let err = spec::load_str(&b.dir.path().join("p.yaml"), src.into(), &crate::registry(), &[])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`val_fraction` must be in [0, 1)")
            && err.contains("`center_rewards` must be 0 or more")
            && err.contains("`lr` must be positive")
            && err.contains("`likelihood` must be 0 or more"),
        "{err}"
    );
}

/// `backbone_lr` puts the backbone in its own parameter group: frozen at 0 (the exported
/// backbone is the input model's, bit for bit), at a multiple of `lr` otherwise.
#[test]
fn the_backbone_can_train_slower_or_not_at_all() {
    let rs = rankings(8, 4);
    let base_weights = |b: &Bench| {
        candle_core::safetensors::load(b.dir.path().join("base/model.safetensors"), &Device::Cpu)
            .unwrap()
    };
    for (backbone_lr, frozen) in [("0", true), ("0.5", false)] {
        let b = Bench::new("reward", &rs);
        let p = b.pipeline(&format!("batch_size: 2, steps: 3, warmup_steps: 0, lr: 1e-2, min_lr: 1e-2, eval_every: 0, backbone_lr: {backbone_lr}"));
        let (summary, _) = b.run(&p, quiet);
        assert!(summary.ok(), "{:?}", summary.failed);
        let out = b.output(&p);
        let (before, after) = (
            base_weights(&b),
            candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap(),
        );
        let same = |n: &str| {
            before[n].flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == after[n].flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(same("transformer.h.0.mlp.c_fc.weight"), frozen, "backbone_lr {backbone_lr}");
        let line = &metric_lines(&out)[0];
        assert_eq!(line["lr"].as_f64(), Some(1e-2));
        assert_eq!(
            line.get("lr/backbone").and_then(|v| v.as_f64()),
            (!frozen).then_some(5e-3),
            "{line}"
        );
    }
}

/// With `likelihood: α` a score is the head's plus α times the answer's mean log-probability
/// (its tokens and `<|im_end|>`, as the chat template's assistant mask marks them) under the
/// model's own LM head, computed here by hand; the weight is saved in `config.json` and read
/// back by `Scorer`.
#[test]
fn the_likelihood_term_adds_the_answers_mean_log_prob() {
    let b = Bench::new("reward", &rankings(8, 5));
    let p = b.pipeline("batch_size: 2, steps: 3, eval_every: 0, lr: 1e-3, likelihood: 2.5");
    let (summary, _) = b.run(&p, quiet);
    assert!(summary.ok(), "{:?}", summary.failed);
    let out = b.output(&p);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["hone"]["likelihood"], 2.5, "{cfg}");
    let scorer = Scorer::load(&out).unwrap();
    let r = export::load_reward(&out, DType::F32).unwrap();
    assert_eq!(r.likelihood, 2.5);
    let tok = ChatTokenizer::from_file(&out.join("tokenizer.json"), r.backbone.config.vocab_size)
        .unwrap();
    let head_only = RewardModel { gpt: r.backbone.model, head: r.head, likelihood: None };
    for (prompt, answer) in [("ab1?", "cdokef"), ("ij2?", "a"), ("x?", "abcdefghij")] {
        let e = tok.encode(&conversation(prompt, answer), false).unwrap();
        let start = e.assistant.iter().position(|&a| a).unwrap();
        // The prompt's tokens with the assistant header (what PPO's rollouts start from).
        assert_eq!(tok.encode(&conversation(prompt, "")[..1], true).unwrap().ids.len(), start);
        let head = head_only
            .scores(&[&e.ids], &[start], r.pad_token_id, &mut Dropout::off())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let n = e.ids.len();
        let x = Tensor::new(&e.ids[..n - 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let y = Tensor::new(&e.ids[1..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let lp = head_only
            .gpt
            .token_log_probs(&x, &y, 1.0, &mut Dropout::off())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Token i + 1 is predicted at position i; the answer's tokens are the masked ones.
        let answer_lp: Vec<f64> =
            (0..n - 1).filter(|&i| e.assistant[i + 1]).map(|i| f64::from(lp[i])).collect();
        assert_eq!(answer_lp.len(), tok.text_ids(&format!(" {answer}")).unwrap().len() + 1);
        let want = f64::from(head) + 2.5 * answer_lp.iter().sum::<f64>() / answer_lp.len() as f64;
        let got = scorer.score(prompt, answer).unwrap();
        assert!((got - want).abs() < 1e-4, "{prompt:?} {answer:?}: {got} vs {want}");
    }
    // An answer holding special tokens is scored from its given start to its last `<|im_end|>`;
    // a row without an answer cannot be scored this way.
    let with = RewardModel {
        gpt: head_only.gpt,
        head: head_only.head,
        likelihood: Likelihood::new(1.0, tok.im_end),
    };
    let odd = tok.encode(&conversation("x?", "a<|im_start|>b<|im_end|>c"), false).unwrap();
    assert_eq!(
        odd.ids.iter().filter(|&&t| t == tok.im_start).count(),
        3,
        "the special tokens are tokens"
    );
    let start = tok.encode(&conversation("x?", "")[..1], true).unwrap().ids.len();
    assert!(
        with.scores(&[&odd.ids], &[start], 0, &mut Dropout::off())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
            .is_finite()
    );
    let prompt_only = tok.encode(&conversation("x?", "a")[..1], true).unwrap().ids;
    let err = with
        .scores(&[&prompt_only], &[prompt_only.len()], 0, &mut Dropout::off())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no assistant answer closed by `<|im_end|>`"), "{err}");
    // One answer start per row.
    let err = with
        .scores(&[&odd.ids, &odd.ids], &[start], 0, &mut Dropout::off())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("1 answer starts for 2 rows"), "{err}");
}
