//! Tests of the `dpo` stage: the losses by hand, and through the engine on a tiny
//! character-level model that must learn which answers hold a keyword.

use std::path::Path;
use std::sync::atomic::Ordering;

use candle_core::Var;
use hone_engine::events::Event;
use hone_engine::spec;

use super::*;
use crate::data::rankings::Ranking;
use crate::model::GptConfig;
use crate::rl::preferences::example;
use crate::testing::keyword::{Bench, rankings};
use crate::testing::support::{self, quiet};

fn metric_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two pairs worked by hand. With `h = (pc − rc) − (pr − rr)`: pair 1 has h = (−1 + 2) −
/// (−3 + 2.5) = 1.5, pair 2 h = (−2 + 2) − (−1 + 1.5) = −0.5. DPO at β = 0.5:
/// `L = mean ln(1 + e^(−βh))`, `∂L/∂pc = −β·σ(−βh)/2`, `∂L/∂pr = +β·σ(−βh)/2`.
/// IPO at β = 0.5 (target 1/(2β) = 1): `L = mean (h − 1)²`, `∂L/∂pc = (h − 1)`.
#[test]
fn the_dpo_and_ipo_losses_and_their_gradients_match_a_hand_computation() {
    let dev = Device::Cpu;
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (rc, rr) = (
        Tensor::new(&[-2.0f64, -2.0], &dev).unwrap(),
        Tensor::new(&[-2.5f64, -1.5], &dev).unwrap(),
    );
    let h = [1.5f64, -0.5];
    for kind in [LossKind::Sigmoid, LossKind::Ipo] {
        let pc = Var::from_slice(&[-1.0f64, -2.0], 2, &dev).unwrap();
        let pr = Var::from_slice(&[-3.0f64, -1.0], 2, &dev).unwrap();
        let loss = dpo_loss(pc.as_tensor(), pr.as_tensor(), &rc, &rr, 0.5, kind).unwrap();
        let g = loss.backward().unwrap();
        let gc = g.get(pc.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        let gr = g.get(pr.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        let (want, dh): (f64, Vec<f64>) = match kind {
            LossKind::Sigmoid => (
                h.iter().map(|h| (1.0 + (-0.5 * h).exp()).ln()).sum::<f64>() / 2.0,
                h.iter().map(|h| -0.5 * sig(-0.5 * h) / 2.0).collect(),
            ),
            LossKind::Ipo => (
                h.iter().map(|h| (h - 1.0).powi(2)).sum::<f64>() / 2.0,
                h.iter().map(|h| h - 1.0).collect(),
            ),
        };
        assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-12, "{kind:?}");
        for i in 0..2 {
            assert!((gc[i] - dh[i]).abs() < 1e-12 && (gr[i] + dh[i]).abs() < 1e-12, "{kind:?}");
        }
        // The statistics' loss is the same number.
        let mut s = PairStats::default();
        for (i, (c, r)) in [(-1.0, -3.0), (-2.0, -1.0)].into_iter().enumerate() {
            let reference = ([-2.0, -2.0][i], [-2.5, -1.5][i]);
            s.add((c, r), reference, 0.5, kind);
        }
        assert!((s.loss() - want).abs() < 1e-12, "{kind:?}");
        // Implicit rewards β(π − π_ref): pair 1 chosen 0.5, rejected −0.25; pair 2 0, 0.25.
        assert_eq!(s.right, 1);
        assert!((s.margin() - (0.75 - 0.25) / 2.0).abs() < 1e-12);
    }
    // Stable far from zero: a pair right by 1000 nats costs nothing, wrong by 1000 costs β·1000.
    let z = Tensor::new(&[0.0f32], &dev).unwrap();
    let far = Tensor::new(&[1000.0f32], &dev).unwrap();
    let cost = |pc: &Tensor, pr: &Tensor| {
        dpo_loss(pc, pr, &z, &z, 0.1, LossKind::Sigmoid).unwrap().to_scalar::<f32>().unwrap()
    };
    assert!(cost(&far, &z) < 1e-30 && (cost(&z, &far) - 100.0).abs() < 1e-3);
}

/// A row's answer log-probability: the sum over its answer's tokens, or their mean.
#[test]
fn an_answers_log_probability_covers_its_tokens_and_its_closing_im_end() {
    let b = Bench::new("dpo", &rankings(1, 1));
    let base = export::load(&b.dir.path().join("base"), DType::F32).unwrap();
    let tok = ChatTokenizer::from_file(&b.dir.path().join("base/tokenizer.json"), 64).unwrap();
    let r = Ranking {
        prompt: "ab?".into(),
        responses: vec!["cd".into(), "e".into()],
        ranking: vec![vec![0], vec![1]],
    };
    let e = example(&tok, &r, 48, &mut 0).unwrap().unwrap();
    let rows: Vec<&Vec<u32>> = e.rows.iter().collect();
    let starts = [e.start, e.start];
    let sum = answer_log_probs(&base.model, &rows, &starts, tok.end_of_text, tok.im_end, false)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mean = answer_log_probs(&base.model, &rows, &starts, tok.end_of_text, tok.im_end, true)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // By hand from the model's per-token log-probs of the whole row.
    for (i, row) in e.rows.iter().enumerate() {
        let x = Tensor::new(&row[..row.len() - 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let y = Tensor::new(&row[1..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let lp = base
            .model
            .token_log_probs(&x, &y, 1.0, &mut crate::model::ops::Dropout::off())
            .unwrap();
        let lp = lp.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let end = row.iter().rposition(|&t| t == tok.im_end).unwrap();
        let want: f32 = lp[e.start - 1..end].iter().sum();
        let n = (end + 1 - e.start) as f32;
        assert_eq!(n as usize, r.responses[e.responses[i]].len() + 1, "the answer and <|im_end|>");
        assert!((sum[i] - want).abs() < 1e-4 && (mean[i] - want / n).abs() < 1e-5);
    }
}

/// DPO on a tiny untrained model learns a separable preference (answers holding a keyword
/// are better): its implicit reward ranks held-out pairs right, and the policy is a chat
/// model loadable like `sft`'s, with TRL's metric names in metrics.jsonl.
#[test]
fn dpo_learns_a_keyword_preference_on_held_out_prompts() {
    let b = Bench::new("dpo", &rankings(48, 1));
    let p = b.pipeline("batch_size: 4, steps: 60, lr: 3e-3, min_lr: 3e-4, warmup_steps: 5, eval_every: 30, val_fraction: 0.25, beta: 0.5");
    let (summary, events) = b.run(&p, quiet);
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
        "data.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let lines = metric_lines(&out);
    let evals: Vec<f64> = lines.iter().filter_map(|l| l["val_accuracy"].as_f64()).collect();
    assert_eq!(evals.len(), 3, "evaluations at 0, 30 and the end: {evals:?}");
    assert_eq!(evals[0], 0.0, "the policy starts as the reference: no pair is ranked yet");
    assert!(evals[2] >= 0.9, "held-out pair accuracy {evals:?}");
    let steps: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("grad_norm").is_some()).collect();
    assert_eq!(steps.len(), 60);
    for k in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "lr",
    ] {
        assert!(steps[0][k].as_f64().is_some_and(f64::is_finite), "{k} in {}", steps[0]);
    }
    // At step 0 the policy is the reference: every implicit reward is 0, the loss ln 2.
    assert_eq!(steps[0]["rewards/margins"].as_f64(), Some(0.0));
    assert!((steps[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6);
    let last = steps.last().unwrap();
    assert!(last["rewards/margins"].as_f64().unwrap() > 0.5, "{last}");
    let finished = support::finished_metrics(&events, "dpo");
    assert_eq!(finished["val_accuracy"].as_f64(), Some(evals[2]));
    // A chat model, as sft writes it: the language-model layout and the chat template.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "GPT2LMHeadModel");
    assert!(
        std::fs::read_to_string(out.join("tokenizer_config.json"))
            .unwrap()
            .contains("chat_template")
    );
    let trained = export::load(&out, DType::F32).unwrap();
    assert_eq!(
        trained.config.vocab_size,
        export::load(&b.dir.path().join("base"), DType::F32).unwrap().config.vocab_size
    );
}

/// IPO and length normalisation run and learn too; an explicit reference equal to the model
/// gives the bytes of no reference.
#[test]
fn ipo_learns_and_an_explicit_reference_changes_nothing_when_it_is_the_model() {
    let rs = rankings(24, 4);
    let b = Bench::new("dpo", &rs);
    let p = b.pipeline("batch_size: 4, steps: 40, lr: 3e-3, warmup_steps: 5, eval_every: 0, val_fraction: 0.25, loss: ipo, beta: 0.5");
    assert!(b.run(&p, quiet).0.ok());
    let evals: Vec<f64> =
        metric_lines(&b.output(&p)).iter().filter_map(|l| l["val_accuracy"].as_f64()).collect();
    assert!(evals.last().copied().unwrap() >= 0.8, "{evals:?}");

    let with = "batch_size: 4, steps: 3, eval_every: 0, lr: 1e-3, length_normalize: true";
    let plain = Bench::new("dpo", &rs);
    let pp = plain.pipeline(with);
    assert!(plain.run(&pp, quiet).0.ok());
    let src = format!(
        "name: t\nseed: 5\nstages:\n  base: {{ uses: command, with: {{ cmd: 'cp base/* \"$HONE_OUT\"/', deps: [base] }} }}\n  rank: {{ uses: command, with: {{ cmd: 'cp rank/* \"$HONE_OUT\"/', deps: [rank] }} }}\n  dpo:\n    uses: dpo\n    inputs: {{ model: base, rankings: rank, reference: base }}\n    with: {{ threads: 1, {with} }}\n"
    );
    let pr = spec::load_str(&plain.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
        .unwrap();
    assert!(plain.run(&pr, quiet).0.ok());
    assert_eq!(
        std::fs::read(plain.output(&pr).join("model.safetensors")).unwrap(),
        std::fs::read(plain.output(&pp).join("model.safetensors")).unwrap()
    );
}

/// Stopped mid-run, the next run resumes from its checkpoint and ends with the bytes of an
/// uninterrupted run.
#[test]
fn a_stopped_dpo_run_resumes_to_identical_bytes() {
    let rs = rankings(16, 2);
    let with = "batch_size: 2, steps: 12, eval_every: 4, checkpoint_every: 4, lr: 1e-3";
    let whole = Bench::new("dpo", &rs);
    let pw = whole.pipeline(with);
    assert!(whole.run(&pw, quiet).0.ok());
    let b = Bench::new("dpo", &rs);
    let p = b.pipeline(with);
    let (first, _) = b.run(&p, |e, cancel| {
        if let Event::Progress { stage, done: 6, .. } = e
            && stage == "dpo"
        {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert!(!first.ok());
    let (second, events) = b.run(&p, quiet);
    assert!(second.ok(), "{:?}", second.failed);
    let resumed = events.iter().find_map(|e| match e {
        Event::Progress { stage, done, .. } if stage == "dpo" => Some(*done),
        _ => None,
    });
    assert_eq!(resumed, Some(7));
    for f in ["model.safetensors", "metrics.jsonl", "config.json"] {
        assert_eq!(
            std::fs::read(b.output(&p).join(f)).unwrap(),
            std::fs::read(whole.output(&pw).join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn bad_params_and_a_mismatched_reference_are_clear_errors() {
    let b = Bench::new("dpo", &rankings(4, 3));
    for (with, want) in [
        ("beta: 0", "`beta` must be positive"),
        ("val_fraction: 1.5", "`val_fraction` must be in [0, 1)"),
        ("loss: hinge", "loss"),
    ] {
        let src = format!(
            "name: t\nstages:\n  m: {{ uses: command, with: {{ cmd: 'true' }} }}\n  dpo:\n    uses: dpo\n    inputs: {{ model: m, rankings: m }}\n    with: {{ {with} }}\n"
        );
        let err = spec::load_str(&b.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(want), "{with}: {err}");
    }
    // A reference with another vocabulary.
    let other = b.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let base = export::load(&b.dir.path().join("base"), DType::F32).unwrap();
    let cfg = GptConfig { vocab_size: base.config.vocab_size + 1, ..base.config.clone() };
    let ps = crate::model::ParamStore::seeded(1);
    Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
    export::save(&other, &cfg, &ps.snapshot(), &export::GenerationConfig::defaults(Some(0)))
        .unwrap();
    let src = "name: t\nseed: 5\nstages:\n  base: { uses: command, with: { cmd: 'cp base/* \"$HONE_OUT\"/', deps: [base] } }\n  other: { uses: command, with: { cmd: 'cp other/* \"$HONE_OUT\"/', deps: [other] } }\n  rank: { uses: command, with: { cmd: 'cp rank/* \"$HONE_OUT\"/', deps: [rank] } }\n  dpo:\n    uses: dpo\n    inputs: { model: base, rankings: rank, reference: other }\n    with: { threads: 1, steps: 2 }\n".to_string();
    let p =
        spec::load_str(&b.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[]).unwrap();
    let (summary, _) = b.run(&p, quiet);
    let err = &summary.failed.first().expect("it fails").1;
    assert!(
        err.contains("input `reference`") && err.contains("share the model's tokenizer"),
        "{err}"
    );
}

/// One thread or two (a step's two halves then run at once), or two with gradient
/// checkpointing (the halves then run one after the other): the same bytes.
#[test]
fn threads_and_gradient_checkpointing_leave_the_bytes_unchanged() {
    let rs = rankings(16, 4);
    let runs: Vec<(Vec<u8>, Vec<u8>)> =
        ["threads: 1", "threads: 2", "threads: 2, gradient_checkpointing: true"]
            .into_iter()
            .map(|with| {
                let b = Bench::new("dpo", &rs);
                let src = format!(
                    "name: t\nseed: 5\nstages:\n  base: {{ uses: command, with: {{ cmd: 'cp base/* \"$HONE_OUT\"/', deps: [base] }} }}\n  rank: {{ uses: command, with: {{ cmd: 'cp rank/* \"$HONE_OUT\"/', deps: [rank] }} }}\n  dpo:\n    uses: dpo\n    inputs: {{ model: base, rankings: rank }}\n    with: {{ batch_size: 3, steps: 4, eval_every: 2, lr: 1e-3, {with} }}\n"
                );
                let p = spec::load_str(&b.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
                    .unwrap();
                assert!(b.run(&p, quiet).0.ok());
                let out = b.output(&p);
                (
                    std::fs::read(out.join("model.safetensors")).unwrap(),
                    std::fs::read(out.join("metrics.jsonl")).unwrap(),
                )
            })
            .collect();
    assert!(runs[0] == runs[1], "1 and 2 threads differ");
    assert!(runs[1] == runs[2], "gradient checkpointing changes the bytes");
}
