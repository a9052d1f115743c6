//! `sample`: K responses per prompt from a chat model, the first step of RLHF.
//!
//! ```yaml
//! sample:
//!   uses: sample
//!   inputs: { model: sft, prompts: prompts }   # a chat model (sft); an ingest of prompt records
//!   with: { k: 4, temperature: 1.0, max_new_tokens: 48 }
//! ```
//!
//! Each prompt record (`{"prompt", "answer"?}`) of the chosen `split` becomes a ChatML user
//! message; the model answers it `k` times. All responses are sampled in batches of
//! `batch_size` sequences on the shared sampler ([`crate::model::sample::sample_batch`]),
//! each with its own seed derived from the pipeline seed and its index (prompt · k +
//! response), so the output is the same for any batch size and thread count. A response
//! ends at `<|im_end|>` (or `<|endoftext|>`) or after `max_new_tokens` tokens.
//!
//! (The model's sampling code is [`crate::model::sample`]; this file is the stage kind.)
//!
//! **Outputs** (port `candidates`): `candidates.jsonl` ([`crate::data::candidates`]) and
//! `meta.json` (the model's digest, k, the sampling params, counts). Metrics: `responses`,
//! `finished_share` (responses that ended with the stop token), `mean_tokens`, and
//! `tokens_per_second` (the sampling speed; in the stage record, not the artifact).
//!
//! **Progress and resume.** Progress counts prompts with an ETA. Every finished prompt is
//! appended to a file in the stage's checkpoint directory, so a stopped or killed run resumes
//! with the prompts it had not finished (each prompt's responses depend only on its seed,
//! so a resumed run writes the same bytes).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::candidates::{self, Candidates};

use crate::data::prompts::{Prompt, Splits, read_prompts};
use crate::model::chat::ChatModel;
use crate::model::sample::{Observer, Request, SampleOptions, Sampled, row_seed, sample_batch};
use crate::ports;

pub struct Sample;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Responses per prompt.
    #[serde(default = "defaults::k")]
    pub k: usize,
    #[serde(default = "defaults::one")]
    pub temperature: f64,
    /// 0 keeps every token.
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "defaults::one")]
    pub top_p: f64,
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// Which part of the prompt corpus to answer.
    #[serde(default = "defaults::split")]
    pub split: Splits,
    /// At most this many prompts (the first ones); 0: all.
    #[serde(default)]
    pub limit: usize,
    /// Sequences sampled together in one step.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Worker threads; 0 uses them all.
    #[serde(default)]
    pub threads: usize,
}

impl Stage for Sample {
    type Params = Params;
    const KIND: &'static str = "sample";
    /// Why each bump: docs/kind-versions.md.
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "K responses per prompt from a chat model (batched, seeded), for ranking";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::required("model", ports::MODEL),
        Port::required("prompts", ports::PROMPTS),
    ]);
    const OUTPUTS: &'static [Port] = &[Port::required("candidates", ports::CANDIDATES)];

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        if p.k < 2 {
            out.push(
                ParamProblem::at(
                    &["k"],
                    format!("`k` must be at least 2, not {}: a ranking compares responses", p.k),
                )
                .help("InstructGPT ranks 4 to 9 responses per prompt"),
            );
        }
        if p.max_new_tokens == 0 {
            out.push(ParamProblem::at(&["max_new_tokens"], "`max_new_tokens` must be at least 1"));
        }
        if p.batch_size == 0 {
            out.push(
                ParamProblem::at(&["batch_size"], "`batch_size` must be at least 1")
                    .help("64 sequences per step suits a CPU"),
            );
        }
        for problem in options(p).problems() {
            let field = if problem.starts_with("temperature") { "temperature" } else { "top_p" };
            out.push(ParamProblem::at(&[field], problem));
        }
        out
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        crate::training::on_threads(p.threads, || sample(p, cx))
    }
}

fn options(p: &Params) -> SampleOptions {
    SampleOptions {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        max_new_tokens: p.max_new_tokens,
        seed: 0,
        stop_at: None,
    }
}

/// Where finished prompts are kept until the stage ends (in the checkpoint directory).
const PARTIAL: &str = "candidates.partial.jsonl";

/// A finished prompt in [`PARTIAL`]: its index and its line.
#[derive(Serialize, Deserialize)]
struct Done {
    index: usize,
    candidates: Candidates,
}

/// Prompts finished by an earlier, stopped run; a torn last line (a kill mid-write) is ignored.
fn resume(path: &Path) -> BTreeMap<usize, Candidates> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Done>(l).ok())
        .map(|d| (d.index, d.candidates))
        .collect()
}

/// Collects the K responses of each prompt; a prompt is written out when all are done.
struct Collector<'a> {
    cx: &'a RunCx<'a>,
    m: &'a ChatModel,
    k: usize,
    /// Prompt index (into the stage's prompt list) of each request group.
    prompts: &'a [usize],
    texts: &'a [Prompt],
    pending: BTreeMap<usize, Vec<Option<Sampled>>>,
    done: BTreeMap<usize, Candidates>,
    partial: std::fs::File,
    total: usize,
    tokens: usize,
    failed: Option<StageError>,
}

impl Collector<'_> {
    fn finish(&mut self, group: usize, sampled: Vec<Sampled>) -> Result<(), StageError> {
        let index = self.prompts[group];
        let pr = &self.texts[index];
        let mut responses = Vec::with_capacity(self.k);
        for s in &sampled {
            responses.push(self.m.tok.decode_reply(s.text_tokens())?.trim().to_string());
        }
        let c = Candidates {
            prompt: pr.prompt.clone(),
            answer: pr.answer.clone(),
            responses,
            tokens: sampled.iter().map(|s| s.tokens.len()).collect(),
            logprobs: sampled.iter().map(Sampled::logprob_sum).collect(),
            finished: sampled.iter().map(|s| s.finished).collect(),
        };
        let line =
            serde_json::to_string(&Done { index, candidates: c.clone() }).expect("plain data");
        writeln!(self.partial, "{line}")
            .and_then(|()| self.partial.flush())
            .map_err(StageError::io("cannot save a finished prompt in the checkpoint directory"))?;
        self.done.insert(index, c);
        self.cx.progress(
            self.done.len() as u64,
            Some(self.total as u64),
            format!("{}/{} prompts", self.done.len(), self.total),
        );
        Ok(())
    }
}

impl Observer for Collector<'_> {
    fn done(&mut self, row: usize, sampled: &Sampled) {
        self.tokens += sampled.tokens.len();
        let (group, j) = (row / self.k, row % self.k);
        let slots = self.pending.entry(group).or_insert_with(|| vec![None; self.k]);
        slots[j] = Some(sampled.clone());
        if slots.iter().all(Option::is_some) {
            let all = self
                .pending
                .remove(&group)
                .expect("present")
                .into_iter()
                .map(|s| s.expect("all done"))
                .collect();
            if let Err(e) = self.finish(group, all) {
                self.failed.get_or_insert(e);
            }
        }
    }
    fn cancelled(&self) -> bool {
        self.failed.is_some() || self.cx.is_cancelled()
    }
}

fn sample(p: &Params, cx: &RunCx) -> Result<(), StageError> {
    let model_dir = cx.required_input("model")?;
    let m =
        ChatModel::load(model_dir).map_err(|e| StageError::msg(format!("input `model`: {e}")))?;
    if !m.is_chat {
        return Err(StageError::msg(
            "input `model` is not a chat model (its tokenizer_config.json has no chat_template)\n   = help: wire `model` to an `sft` stage: responses to rank come from the fine-tuned model",
        ));
    }
    let mut prompts = read_prompts(cx.required_input("prompts")?, p.split, Sample::KIND)?;
    if p.limit > 0 {
        prompts.truncate(p.limit);
    }
    if prompts.is_empty() {
        return Err(StageError::msg("input `prompts` has no prompt records in the chosen `split`"));
    }
    // Each prompt as a ChatML user turn; one too long to leave room for an answer is skipped.
    let block = m.config.block_size;
    let mut encoded = Vec::new();
    let mut too_long = Vec::new();
    for (i, pr) in prompts.iter().enumerate() {
        let ids = m.tok.encode(&pr.prompt.messages(), true)?.ids;
        if ids.len() >= block {
            too_long.push(i);
        } else {
            encoded.push((i, ids));
        }
    }
    if encoded.is_empty() {
        return Err(StageError::msg(format!(
            "every prompt is longer than the model's {block}-token window: none can be answered"
        )));
    }
    let partial_path = cx.checkpoint_dir.join(PARTIAL);
    let resumed = resume(&partial_path);
    let todo: Vec<&(usize, Vec<u32>)> =
        encoded.iter().filter(|(i, _)| !resumed.contains_key(i)).collect();
    if !resumed.is_empty() {
        tracing::info!(
            "resuming: {} of {} prompts were sampled by an earlier run",
            resumed.len(),
            encoded.len()
        );
    }
    let requests: Vec<Request> = todo
        .iter()
        .flat_map(|(i, ids)| {
            (0..p.k).map(move |j| Request {
                prompt: ids.clone(),
                seed: row_seed(cx.seed, (i * p.k + j) as u64),
            })
        })
        .collect();
    let group_prompt: Vec<usize> = todo.iter().map(|(i, _)| *i).collect();
    // Rewrite the partial file with the complete lines only (a kill may have torn the last).
    let mut text = String::new();
    for (index, c) in &resumed {
        text.push_str(
            &serde_json::to_string(&Done { index: *index, candidates: c.clone() })
                .expect("plain data"),
        );
        text.push('\n');
    }
    std::fs::write(&partial_path, text)
        .map_err(StageError::io("cannot write in the checkpoint directory"))?;
    let partial = std::fs::OpenOptions::new()
        .append(true)
        .open(&partial_path)
        .map_err(StageError::io("cannot open the checkpoint file"))?;
    let mut c = Collector {
        cx,
        m: &m,
        k: p.k,
        prompts: &group_prompt,
        texts: &prompts,
        pending: BTreeMap::new(),
        done: resumed,
        partial,
        total: encoded.len(),
        tokens: 0,
        failed: None,
    };
    let stops = [m.tok.im_end, m.tok.end_of_text, m.tok.im_start];
    let start = Instant::now();
    let finished = sample_batch(&m.decoder, &requests, &options(p), &stops, p.batch_size, &mut c)?;
    if let Some(e) = c.failed.take() {
        return Err(e);
    }
    if finished.is_none() {
        return Err(StageError::Cancelled);
    }
    let seconds = start.elapsed().as_secs_f64();
    let new_tokens = c.tokens;
    let done = std::mem::take(&mut c.done);
    drop(c);

    let mut lines = String::new();
    let (mut responses, mut tokens, mut finished_n) = (0usize, 0usize, 0usize);
    for cand in done.values() {
        lines.push_str(&candidates::to_line(cand));
        responses += cand.responses.len();
        tokens += cand.tokens.iter().sum::<usize>();
        finished_n += cand.finished.iter().filter(|f| **f).count();
    }
    let model_digest = hone_engine::digest::hash_tree(model_dir)
        .map_err(StageError::io("input `model`: cannot hash it"))?;
    let meta = json!({
        "model": model_digest.short(),
        "k": p.k,
        "temperature": p.temperature,
        "top_k": p.top_k,
        "top_p": p.top_p,
        "max_new_tokens": p.max_new_tokens,
        "split": p.split,
        "prompts": done.len(),
        "responses": responses,
        "tokens": tokens,
        "finished": finished_n,
        "skipped_too_long": too_long.len(),
        "skipped_examples": too_long.iter().take(3).map(|&i| prompts[i].prompt.display().into_owned()).collect::<Vec<_>>(),
    });
    let write = |name: &str, text: &str| {
        std::fs::write(cx.out_dir.join(name), text)
            .map_err(StageError::io(format!("cannot write `{name}`")))
    };
    write(candidates::FILE, &lines)?;
    write("meta.json", &(serde_json::to_string_pretty(&meta).expect("plain data") + "\n"))?;
    cx.metric("responses", responses as u64);
    cx.metric(
        "finished_share",
        if responses == 0 { 0.0 } else { finished_n as f64 / responses as f64 },
    );
    cx.metric("mean_tokens", if responses == 0 { 0.0 } else { tokens as f64 / responses as f64 });
    if seconds > 0.0 && new_tokens > 0 {
        let rate = new_tokens as f64 / seconds;
        cx.metric("tokens_per_second", (rate * 10.0).round() / 10.0);
        tracing::info!(
            "sampled {new_tokens} tokens in {seconds:.2} s: {rate:.0} tokens/s, batches of {}",
            p.batch_size
        );
    }
    if !too_long.is_empty() {
        tracing::warn!(
            "{} prompt(s) left out: longer than the model's {block}-token window",
            too_long.len()
        );
    }
    Ok(())
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    use crate::data::prompts::Splits;

    pub fn batch_size() -> usize {
        64
    }

    pub fn k() -> usize {
        4
    }

    pub fn max_new_tokens() -> usize {
        48
    }

    pub fn one() -> f64 {
        1.0
    }

    pub fn split() -> Splits {
        Splits::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat_template::{JINJA, test_tokenizer};
    use crate::model::export::{self, GenerationConfig};
    use crate::model::{Gpt, GptConfig, ParamStore};
    use crate::testing::support::{self, quiet};
    use candle_core::{DType, Device};
    use hone_engine::events::Event;
    use hone_engine::spec;
    use serde_json::Value;
    use std::sync::atomic::Ordering;

    const PROMPTS: [&str; 5] = [
        "hi",
        "what is 2+2?",
        "sky?",
        "name?",
        "a very long prompt that does not fit the window at all, not even close",
    ];

    /// A workspace with a tiny untrained chat model in `model/` and prompt records in
    /// `prompts/`, copied in by `command` stages.
    struct Ws {
        dir: tempfile::TempDir,
    }

    impl Ws {
        fn new(chat: bool) -> Ws {
            Ws::with_block(chat, 40)
        }

        fn with_block(chat: bool, block_size: usize) -> Ws {
            let dir = tempfile::tempdir().unwrap();
            let (json, vocab) = test_tokenizer(&PROMPTS.concat());
            let model = dir.path().join("model");
            std::fs::create_dir_all(&model).unwrap();
            let cfg = GptConfig {
                vocab_size: vocab,
                block_size,
                n_layer: 1,
                n_head: 2,
                n_embd: 16,
                bias: true,
                dropout: 0.0,
                ..Default::default()
            };
            let ps = ParamStore::seeded(3);
            Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
            // Larger weights so that responses vary and some end early.
            for (_, v) in ps.vars() {
                v.set(&(v.as_tensor() * 10.0).unwrap()).unwrap();
            }
            export::save(&model, &cfg, &ps.snapshot(), &GenerationConfig::defaults(Some(0)))
                .unwrap();
            std::fs::write(model.join("tokenizer.json"), json).unwrap();
            if chat {
                std::fs::write(
                    model.join("tokenizer_config.json"),
                    serde_json::json!({ "chat_template": JINJA }).to_string(),
                )
                .unwrap();
            }
            let prompts = dir.path().join("prompts");
            std::fs::create_dir_all(&prompts).unwrap();
            let lines: String = PROMPTS
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    format!("{}\n", json!({ "prompt": p, "answer": (i == 1).then_some("4") }))
                })
                .collect();
            std::fs::write(prompts.join("train.jsonl"), lines).unwrap();
            std::fs::write(prompts.join("val.jsonl"), "").unwrap();
            std::fs::write(prompts.join("meta.json"), r#"{"format": "prompt"}"#).unwrap();
            Ws { dir }
        }

        fn pipeline(&self, with: &str) -> spec::Pipeline {
            let src = format!(
                "name: t\nseed: 5\nstages:\n  model: {{ uses: command, with: {{ cmd: 'cp model/* \"$HONE_OUT\"/', deps: [model] }} }}\n  prompts: {{ uses: command, with: {{ cmd: 'cp prompts/* \"$HONE_OUT\"/', deps: [prompts] }} }}\n  sample: {{ uses: sample, inputs: {{ model: model, prompts: prompts }}, with: {{ k: 3, max_new_tokens: 8, {with} }} }}\n"
            );
            spec::load_str(&self.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
                .unwrap_or_else(|e| panic!("{e}"))
        }

        fn output(&self, with: &str) -> (String, Value) {
            let out = support::output(self.dir.path(), &self.pipeline(with), "sample");
            let meta =
                serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap())
                    .unwrap();
            (std::fs::read_to_string(out.join(candidates::FILE)).unwrap(), meta)
        }
    }

    #[test]
    fn k_responses_per_prompt_the_same_for_any_batch_size_and_thread_count() {
        let ws = Ws::new(true);
        let (s, events) =
            support::run(ws.dir.path(), &ws.pipeline("batch_size: 2, threads: 1"), quiet);
        assert!(s.ok(), "{s:?}");
        let (text, meta) = ws.output("batch_size: 2, threads: 1");
        let c = candidates::read_dir(&support::output(
            ws.dir.path(),
            &ws.pipeline("batch_size: 2, threads: 1"),
            "sample",
        ))
        .unwrap();
        assert_eq!(c.len(), 4, "the prompt longer than the window is left out");
        assert_eq!(
            (meta["skipped_too_long"].as_u64(), meta["k"].as_u64(), meta["prompts"].as_u64()),
            (Some(1), Some(3), Some(4))
        );
        assert_eq!(c[1].answer.as_deref(), Some("4"));
        assert!(c[0].answer.is_none());
        for cand in &c {
            assert_eq!(cand.responses.len(), 3);
            for j in 0..3 {
                assert!(cand.tokens[j] >= 1 && cand.tokens[j] <= 8, "{cand:?}");
                assert!(cand.logprobs[j] < 0.0);
                assert!(
                    cand.finished[j] || cand.tokens[j] == 8,
                    "an unfinished response ran to the limit: {cand:?}"
                );
            }
        }
        assert!(
            c.iter().flat_map(|c| &c.finished).any(|f| *f)
                && c.iter().flat_map(|c| &c.finished).any(|f| !*f),
            "{c:?}"
        );
        let distinct: std::collections::BTreeSet<&String> =
            c.iter().flat_map(|c| &c.responses).collect();
        assert!(distinct.len() > 4, "responses differ: {distinct:?}");
        let progress = events
            .iter()
            .filter(
                |e| matches!(e, Event::Progress { stage, total: Some(4), .. } if stage == "sample"),
            )
            .count();
        assert_eq!(progress, 4, "one progress event per prompt");
        // Another batch size and thread count: the same bytes.
        let (s, _) = support::run(ws.dir.path(), &ws.pipeline("batch_size: 64, threads: 2"), quiet);
        assert!(s.ok(), "{s:?}");
        assert_eq!(ws.output("batch_size: 64, threads: 2").0, text);
    }

    /// A conversation as the prompt (TRL's conversational form): the model answers with every
    /// turn in context, and the candidates keep the conversation.
    #[test]
    fn a_multi_turn_prompt_is_answered_as_a_conversation() {
        let ws = Ws::with_block(true, 96);
        let turns = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "2+2?"}]);
        let path = ws.dir.path().join("prompts/train.jsonl");
        let mut lines = std::fs::read_to_string(&path).unwrap();
        lines.push_str(&format!("{}\n", json!({ "prompt": turns, "answer": "4" })));
        std::fs::write(&path, lines).unwrap();
        let (s, _) = support::run(ws.dir.path(), &ws.pipeline("batch_size: 2"), quiet);
        assert!(s.ok(), "{s:?}");
        let (text, _) = ws.output("batch_size: 2");
        let line = text.lines().find(|l| l.starts_with("{\"prompt\":[")).expect("the conversation");
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["prompt"], turns);
        assert_eq!(v["responses"].as_array().unwrap().len(), 3);
        let c = candidates::parse_line(line).unwrap();
        assert_eq!(c.prompt.messages().len(), 3);
    }

    /// Stopped after its first prompt, the stage resumes with the others and writes what an
    /// uninterrupted run writes.
    #[test]
    fn a_stopped_run_resumes_with_the_prompts_it_had_not_finished() {
        let ws = Ws::new(true);
        let p = ws.pipeline("batch_size: 3");
        let (s, _) = support::run(ws.dir.path(), &p, |e, cancel| {
            if matches!(e, Event::Progress { stage, .. } if stage == "sample") {
                cancel.store(true, Ordering::SeqCst);
            }
        });
        assert!(
            s.failed.iter().any(|(id, msg, _)| id == "sample" && msg.contains("stopped")),
            "{s:?}"
        );
        let (s, events) = support::run(ws.dir.path(), &p, quiet);
        assert!(s.ok(), "{s:?}");
        let first = events.iter().find_map(|e| match e {
            Event::Progress { stage, done, .. } if stage == "sample" => Some(*done),
            _ => None,
        });
        assert!(first.is_some_and(|d| d >= 2), "resumed past the finished prompt: {first:?}");
        let resumed = ws.output("batch_size: 3").0;
        let fresh = Ws::new(true);
        let (s, _) = support::run(fresh.dir.path(), &fresh.pipeline("batch_size: 3"), quiet);
        assert!(s.ok());
        assert_eq!(resumed, fresh.output("batch_size: 3").0);
    }

    #[test]
    fn a_base_model_and_bad_params_are_errors() {
        let ws = Ws::new(false);
        let (s, _) = support::run(ws.dir.path(), &ws.pipeline("batch_size: 2"), quiet);
        assert!(
            s.failed
                .iter()
                .any(|(_, msg, _)| msg.contains("is not a chat model")
                    && msg.contains("`sft` stage")),
            "{s:?}"
        );
        let bad = |with: &str| {
            let src = format!(
                "name: t\nstages:\n  m: {{ uses: command, with: {{ cmd: 'true' }} }}\n  sample: {{ uses: sample, inputs: {{ model: m, prompts: m }}, with: {with} }}\n"
            );
            spec::load_str(&ws.dir.path().join("p.yaml"), src, &crate::registry(), &[])
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("{ k: 1 }").contains("`k` must be at least 2"));
        assert!(bad("{ top_p: 0 }").contains("top_p must be in (0, 1]"));
        assert!(bad("{ batch_size: 0 }").contains("`batch_size` must be at least 1"));
        assert!(bad("{ temprature: 1 }").contains("did you mean `temperature`"));
    }
}
