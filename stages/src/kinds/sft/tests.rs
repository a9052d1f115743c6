//! Tests of the `sft` stage: through the engine, on a tiny character-level model.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use hone_engine::events::Event;
use hone_engine::exec::RunSummary;
use hone_engine::spec;

use super::*;
use crate::model::chat::ChatModel;
use crate::model::chat_template::test_tokenizer;
use crate::model::sample::SampleOptions;
use crate::model::{GptConfig, ParamStore};
use crate::testing::support::{self, quiet};

const QA: [(&str, &str); 4] =
    [("hi", "hello!"), ("name?", "i am bob."), ("2+2?", "4."), ("sky?", "blue.")];

fn conv(user: &str, assistant: &str) -> serde_json::Value {
    serde_json::json!({ "messages": [{ "role": "user", "content": user }, { "role": "assistant", "content": assistant }] })
}

/// A workspace with a tiny untrained base model in `base/` and a chat corpus in `chat/`
/// (as `ingest` writes them), and pipelines that copy them in with `command` stages.
struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    fn new(train: &[serde_json::Value], block_size: usize) -> Bench {
        Bench::with_width(train, block_size, 32)
    }

    fn with_width(train: &[serde_json::Value], block_size: usize, n_embd: usize) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let text: String = QA.iter().flat_map(|(q, a)| [*q, *a]).collect::<Vec<_>>().concat()
            + "abcdefghijklmnopqrstuvwxyz0123456789 .?!+";
        let (json, vocab) = test_tokenizer(&text);
        let base = dir.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        let cfg = GptConfig {
            vocab_size: vocab,
            block_size,
            n_layer: 2,
            n_head: 2,
            n_embd,
            bias: true,
            dropout: 0.0,
            ..Default::default()
        };
        let ps = ParamStore::seeded(3);
        Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        export::save(&base, &cfg, &ps.snapshot(), &export::GenerationConfig::defaults(Some(0)))
            .unwrap();
        std::fs::write(base.join("tokenizer.json"), json).unwrap();
        let chat = dir.path().join("chat");
        std::fs::create_dir_all(&chat).unwrap();
        let lines =
            |v: &[serde_json::Value]| v.iter().map(|r| format!("{r}\n")).collect::<String>();
        std::fs::write(chat.join("train.jsonl"), lines(train)).unwrap();
        std::fs::write(chat.join("val.jsonl"), lines(&train[..2])).unwrap();
        std::fs::write(chat.join("meta.json"), r#"{"format": "chat"}"#).unwrap();
        Bench { dir }
    }

    /// The pipeline; `with` may set `threads` (1 otherwise).
    fn pipeline(&self, with: &str) -> spec::Pipeline {
        let threads = if with.contains("threads:") { "" } else { "threads: 1, " };
        let src = format!(
            "name: t\nseed: 7\nstages:\n  base: {{ uses: command, with: {{ cmd: 'cp base/* \"$HONE_OUT\"/', deps: [base] }} }}\n  chat: {{ uses: command, with: {{ cmd: 'cp chat/* \"$HONE_OUT\"/', deps: [chat] }} }}\n  sft:\n    uses: sft\n    inputs: {{ model: base, data: chat }}\n    with: {{ {threads}{with} }}\n"
        );
        spec::load_str(&self.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(
        &self,
        p: &spec::Pipeline,
        on_event: impl Fn(&Event, &AtomicBool) + Send + Sync,
    ) -> (RunSummary, Vec<Event>) {
        support::run(self.dir.path(), p, on_event)
    }

    fn output(&self, p: &spec::Pipeline) -> PathBuf {
        support::output(self.dir.path(), p, "sft")
    }
}

fn qa_corpus() -> Vec<serde_json::Value> {
    QA.iter().map(|(q, a)| conv(q, a)).collect()
}

const FAST: &str = "batch_size: 4, steps: 120, lr: 1e-2, min_lr: 1e-3, warmup_steps: 5, eval_every: 40, checkpoint_every: 40";

#[test]
fn a_tiny_model_fine_tuned_on_four_conversations_reproduces_their_answers() {
    let b = Bench::new(&qa_corpus(), 48);
    let p = b.pipeline(FAST);
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
    let m = ChatModel::load(&out).unwrap();
    assert!(m.is_chat);
    let greedy = SampleOptions { temperature: 0.0, ..m.options(0) };
    for (q, a) in QA {
        let mut streamed = String::new();
        let r = m
            .reply(&[Message { role: Role::User, content: q.into() }], &greedy, |t| {
                streamed.push_str(t)
            })
            .unwrap();
        assert_eq!(r.text, a, "reply to {q:?}");
        assert_eq!(streamed, a);
    }
    // A history past the context window loses its oldest messages, the system message kept:
    // 12 (system) + 11 (user) + 20 (assistant) + 11 (user) + 11 (header) tokens do not leave
    // the 12 kept for the reply in 48; without the first two turns' messages they do.
    let m_ = |role, content: &str| Message { role, content: content.into() };
    let long = [m_(Role::User, "hi"), m_(Role::Assistant, "hello!"), m_(Role::User, "hi")];
    let r = m.reply(&long, &greedy, |_| {}).unwrap();
    assert_eq!((r.dropped_messages, r.prompt_tokens, r.text.as_str()), (2, 22, "hello!"));
    let with_system = [m_(Role::System, "x"), long[0].clone(), long[1].clone(), long[2].clone()];
    let r = m.reply(&with_system, &greedy, |_| {}).unwrap();
    assert_eq!((r.dropped_messages, r.prompt_tokens), (2, 34));
    let err =
        m.reply(&[m_(Role::User, &"a".repeat(40))], &greedy, |_| {}).err().unwrap().to_string();
    assert!(err.contains("write a shorter message"), "{err}");
    // Evaluations at 0, 40, 80 and the end; the last is on data it has learnt by heart.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evals: Vec<(f64, f64)> = lines
        .iter()
        .filter_map(|l| Some((l["val_loss"].as_f64()?, l["val_accuracy"].as_f64()?)))
        .collect();
    assert_eq!(evals.len(), 4, "{evals:?}");
    assert!(evals[0].1 < 0.5 && evals[3].1 == 1.0 && evals[3].0 < 0.2 * evals[0].0, "{evals:?}");
    let progress = events
        .iter()
        .filter(|e| matches!(e, Event::Progress { stage, total: Some(120), .. } if stage == "sft"))
        .count();
    assert_eq!(progress, 120);
    // The tokenizer config carries the template that renders like hone does.
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(tc["chat_template"], crate::model::chat_template::JINJA);
    assert_eq!(tc["eos_token"], "<|im_end|>");
    let gc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(gc["eos_token_id"], 2);
}

#[test]
fn long_conversations_are_cut_at_an_assistant_turn_or_dropped_and_counted() {
    let long = "a".repeat(40);
    let mut corpus = qa_corpus();
    // Fits whole: 1 + 5 + 2 + 2 + 1 + 10 + 6 + 2 = 29 tokens of "hi" / "hello!".
    // Two turns, the second too long: cut after the first reply.
    corpus.push(serde_json::json!({ "messages": [
        { "role": "user", "content": "hi" }, { "role": "assistant", "content": "hello!" },
        { "role": "user", "content": "hi" }, { "role": "assistant", "content": long } ] }));
    // The first reply is too long: left out.
    corpus.push(conv("hi", &long));
    corpus.push(serde_json::json!({ "messages": [{ "role": "user", "content": "hi" }] }));
    let b = Bench::new(&corpus, 48);
    let p = b.pipeline("batch_size: 2, steps: 2, eval_every: 0");
    let (summary, events) = b.run(&p, quiet);
    assert!(summary.ok(), "{:?}", summary.failed);
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.output(&p).join("data.json")).unwrap())
            .unwrap();
    assert_eq!(data["train"]["truncated"], 1, "{data}");
    assert_eq!(data["train"]["dropped"], 1, "{data}");
    assert_eq!(data["train"]["no_assistant"], 1, "{data}");
    assert_eq!(data["train"]["rows"], 5, "{data}");
    let metrics = support::finished_metrics(&events, "sft");
    assert_eq!((metrics["truncated"].as_u64(), metrics["dropped"].as_u64()), (Some(1), Some(1)));
}

#[test]
fn packing_fills_rows_with_whole_conversations_and_keeps_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let (json, vocab) = test_tokenizer("hiello!name?ibob.");
    std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
    let tok = ChatTokenizer::from_file(&dir.path().join("tokenizer.json"), vocab).unwrap();
    let convs: Vec<(String, Vec<Message>)> = (0..3)
        .map(|i| {
            (
                format!("c{i}"),
                vec![
                    Message { role: Role::User, content: "hi".into() },
                    Message { role: Role::Assistant, content: "hello!".into() },
                ],
            )
        })
        .collect();
    let one = tok.encode(&convs[0].1, false).unwrap();
    let n = one.ids.len();
    let (padded, _) = build_rows(&tok, &convs, 64, LossOn::Assistant, false).unwrap();
    let (packed, counts) = build_rows(&tok, &convs, 2 * n, LossOn::Assistant, true).unwrap();
    assert_eq!(padded.len(), 3);
    assert_eq!(packed.len(), 2, "two conversations fit a row, the third starts the next");
    assert_eq!(packed[0].ids, [one.ids.clone(), one.ids.clone()].concat());
    let w: Vec<f32> = one.assistant[1..].iter().map(|&a| f32::from(u8::from(a))).collect();
    assert_eq!(packed[0].weights, [w.clone(), vec![0.0], w.clone()].concat());
    assert_eq!(packed[0].weights.len(), packed[0].ids.len() - 1);
    assert_eq!(counts.scored_tokens, 3 * w.iter().filter(|&&x| x > 0.0).count());
    let (all, _) = build_rows(&tok, &convs[..1], 64, LossOn::All, false).unwrap();
    assert!(all[0].weights.iter().all(|&x| x == 1.0));
}

/// Stopped mid-run, the next run resumes from the checkpoint and ends with the weights of an
/// uninterrupted run.
#[test]
fn a_stopped_run_resumes_to_identical_weights() {
    let with = "batch_size: 2, steps: 12, eval_every: 4, checkpoint_every: 4, dropout: 0.1";
    let whole = Bench::new(&qa_corpus(), 48);
    let pw = whole.pipeline(with);
    assert!(whole.run(&pw, quiet).0.ok());
    let b = Bench::new(&qa_corpus(), 48);
    let p = b.pipeline(with);
    let (first, _) = b.run(&p, |e, cancel| {
        if let Event::Progress { stage, done: 7, .. } = e
            && stage == "sft"
        {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert!(!first.ok());
    let (second, events) = b.run(&p, quiet);
    assert!(second.ok(), "{:?}", second.failed);
    let resumed = events.iter().find_map(|e| {
        if let Event::Progress { stage, done, .. } = e {
            (stage == "sft").then_some(*done)
        } else {
            None
        }
    });
    assert_eq!(resumed, Some(8));
    let read = |d: PathBuf, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(
        read(b.output(&p), "model.safetensors"),
        read(whole.output(&pw), "model.safetensors")
    );
    assert_eq!(read(b.output(&p), "metrics.jsonl"), read(whole.output(&pw), "metrics.jsonl"));
}

/// One worker thread or two: the same weight and metric bytes (dropout on, so the RNG path
/// is covered too). The model is wide enough for the kernels to take their parallel paths.
#[test]
fn one_and_two_threads_give_the_same_bytes() {
    let runs: Vec<(Vec<u8>, Vec<u8>)> = ["1", "2"]
        .into_iter()
        .map(|threads| {
            let b = Bench::with_width(&qa_corpus(), 48, 64);
            let p = b.pipeline(&format!(
                "batch_size: 16, steps: 4, eval_every: 2, dropout: 0.1, threads: {threads}"
            ));
            assert!(b.run(&p, quiet).0.ok());
            let read = |f: &str| std::fs::read(b.output(&p).join(f)).unwrap();
            (read("model.safetensors"), read("metrics.jsonl"))
        })
        .collect();
    assert!(runs[0] == runs[1], "1 and 2 threads differ");
}

#[test]
fn bad_inputs_and_params_are_explained() {
    let b = Bench::new(&qa_corpus(), 48);
    // Params: at their key, at load time.
    let src = "name: t\nstages:\n  base: { uses: command, with: { cmd: 'true' } }\n  sft:\n    uses: sft\n    inputs: { model: base, data: base }\n    with: { lr: -1, loss: prompt, batch: 3 }\n";
    let err = spec::load_str(&b.dir.path().join("p.yaml"), src.into(), &crate::registry(), &[])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("batch"), "{err}");
    let err = spec::load_str(
        &b.dir.path().join("p.yaml"),
        src.replace(", batch: 3", ""),
        &crate::registry(),
        &[],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("loss") && err.contains("assistant"), "{err}");
    let err = spec::load_str(
        &b.dir.path().join("p.yaml"),
        src.replace(", loss: prompt, batch: 3", ""),
        &crate::registry(),
        &[],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("`lr` must be positive"), "{err}");
    // Wiring: a corpus where the model goes.
    let src = "name: t\nstages:\n  c: { uses: ingest, with: { source: x.jsonl } }\n  sft:\n    uses: sft\n    inputs: { model: c, data: c }\n";
    let err = spec::load_str(&b.dir.path().join("p.yaml"), src.into(), &crate::registry(), &[])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model") && err.contains("corpus"), "{err}");

    // A text corpus where conversations go.
    std::fs::write(b.dir.path().join("chat/meta.json"), r#"{"format": "text"}"#).unwrap();
    let p = b.pipeline("steps: 1");
    let (summary, _) = b.run(&p, quiet);
    let err = &summary.failed[0].1;
    assert!(
        err.contains("input `data` is a text corpus") && err.contains("builtin:tinyworld/chat"),
        "{err}"
    );
    std::fs::write(b.dir.path().join("chat/meta.json"), r#"{"format": "chat"}"#).unwrap();
    // A base tokenizer without the chat tokens.
    let (json, _, _, _) = crate::model::shards::char_tokenizer("abc");
    std::fs::write(b.dir.path().join("base/tokenizer.json"), json).unwrap();
    let (summary, _) = b.run(&b.pipeline("steps: 1"), quiet);
    let err = &summary.failed[0].1;
    assert!(
        err.contains("input `model`")
            && err.contains("<|im_start|>")
            && err.contains("special_tokens"),
        "{err}"
    );
}
