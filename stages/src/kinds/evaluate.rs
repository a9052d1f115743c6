//! `evaluate`: answer held-out prompts with several models and compare them.
//!
//! ```yaml
//! eval:
//!   uses: evaluate
//!   # MODEL stages; an ingest of prompt records; an ingest of training conversations;
//!   # optionally a reward stage (a mean-reward column)
//!   inputs: { models: [base, sft, ppo], prompts: prompts, shots: chat, reward: rm }
//!   with: { names: [base, sft, ppo], max_new_tokens: 48, few_shot: 3 }
//! ```
//!
//! Each model answers every prompt record (`{"prompt", "answer"?}`) of the corpus, greedily
//! by default (`temperature: 0`), else sampled with a seed derived from the pipeline seed and
//! the prompt's index, so a run is reproducible. A chat model (its `tokenizer_config.json` has
//! a `chat_template`, as `sft` writes) gets the prompt as a ChatML user message and its reply
//! ends at `<|im_end|>`.
//!
//! **A base model is graded few-shot**, as language-model papers grade base models (GPT-3's
//! "few-shot" setting): it was never taught to answer a bare question, so each prompt follows
//! `few_shot` solved examples, `Question: … Answer: …` one after another on one line, and ends
//! with `Question: {prompt} Answer:` (one line, because tinyworld's documents are one line each:
//! a base model trained on them has never seen a newline). The examples ([`Shots`]) are drawn with
//! the pipeline seed from the *training* conversations of input `shots` (its `train.jsonl`):
//! single-turn conversations whose question and one-sentence reply are each one line, never
//! one whose question is among the prompts being graded. The same examples precede every
//! prompt and every run. The base model's answer ends at the first newline or the end of its
//! first sentence (`.`, `!`, `?`), as the examples' answers do (lm-evaluation-harness's stop
//! sequences); when the examples and the prompt do not leave room for the answer in the
//! context window (`max_new_tokens`, at most a quarter of the window, as for a chat reply),
//! the first examples are left out (counted as `fewer_shots`). `few_shot: 0` grades the bare
//! `Question: … Answer:` template. The report names the format and the
//! examples.
//!
//! A record with an `answer` is graded with tinyworld's rule labeler
//! ([`crate::tinyworld::grade`]): answer accuracy is correct / graded. Mean response length is
//! in tokens, over every prompt. With a reward model wired to `reward` (a `reward` stage), the
//! table gains each model's mean reward: the raw score of its answers, as `hone score` gives
//! it (an empty answer, which a reward model cannot score, is left out and counted).
//!
//! **Outputs** (port `metrics`): `report.md` (a table, one row per model, and the few-shot
//! examples), `report.json` ([`EvalReport`]) and `answers.jsonl` (one line per model and prompt:
//! `model`, `prompt`, `answer`, `response`, `correct`, and `reward` with a reward model).
//! Metrics: `<name>.accuracy`, `<name>.mean_length`, `<name>.mean_reward`.

use std::fmt::Write as _;
use std::path::Path;

use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::corpus::{self, Corpus};
use crate::data::evaluation::{EvalReport, Example, ModelRow};
use crate::data::formats::{Message, PromptText, Role};
use crate::data::prompts::{Prompt, Splits, read_prompts};
use crate::model::Gpt;
use crate::model::chat::ChatModel;
use crate::model::export;
use crate::model::rng::{Rng, Stream};
use crate::model::sample::{SampleOptions, generate};
use crate::ports;
use crate::rl::kl::answer_kl;
use crate::rl::reward_model::{ScoreError, Scorer, encode};
use candle_core::DType;

pub struct Evaluate;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// A name per model, in the order of `models` (default: `model 1`, `model 2`, ...).
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default = "defaults::split")]
    pub split: Splits,
    /// Answer at most this many prompts (the first ones); 0: all.
    #[serde(default)]
    pub limit: usize,
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// 0: greedy.
    #[serde(default)]
    pub temperature: f64,
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "defaults::top_p")]
    pub top_p: f64,
    /// Solved examples before each prompt for a base model (one without a chat template),
    /// drawn from input `shots`; 0: the bare question.
    #[serde(default = "defaults::few_shot")]
    pub few_shot: usize,
    /// Worker threads; 0 uses them all.
    #[serde(default)]
    pub threads: usize,
}

/// Most solved examples a prompt can have.
const MAX_FEW_SHOT: usize = 16;

impl Stage for Evaluate {
    type Params = Params;
    const KIND: &'static str = "evaluate";
    /// Why each bump: docs/kind-versions.md.
    const VERSION: u32 = 5;
    const ABOUT: &'static str =
        "answer held-out prompts with several models; compare answer accuracy and response length";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::many("models", ports::MODEL),
        Port::required("prompts", ports::PROMPTS),
        Port::optional("shots", ports::CHAT_DATA),
        Port::optional("reward", ports::REWARD_MODEL),
        Port::optional("reference", ports::MODEL),
    ]);
    const OUTPUTS: &'static [Port] = &[Port::required("metrics", ports::METRICS)];

    fn settings() -> Vec<(&'static str, String)> {
        crate::model::settings()
    }

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        if p.max_new_tokens == 0 {
            out.push(
                ParamProblem::at(&["max_new_tokens"], "`max_new_tokens` must be at least 1")
                    .help("tinyworld answers are one sentence: 48 is plenty"),
            );
        }
        if p.few_shot > MAX_FEW_SHOT {
            out.push(ParamProblem::at(&["few_shot"], format!("`few_shot` is {}; at most {MAX_FEW_SHOT} examples fit a small model's context", p.few_shot)).help("language-model papers use a handful; 3 is the default"));
        }
        for problem in options(p, 0).problems() {
            let field = if problem.starts_with("temperature") { "temperature" } else { "top_p" };
            out.push(ParamProblem::at(&[field], problem));
        }
        for (i, n) in p.names.iter().enumerate() {
            if n.trim().is_empty() || n.contains('|') || n.contains('\n') {
                out.push(ParamProblem::at(
                    &["names"],
                    format!("name {} ({n:?}) must be non-empty, on one line, without `|`", i + 1),
                ));
            }
            if p.names[..i].contains(n) {
                out.push(
                    ParamProblem::at(&["names"], format!("`{n}` is listed twice"))
                        .help("give each model its own name"),
                );
            }
        }
        out
    }

    fn resources(p: &Params) -> hone_engine::resources::Resources {
        crate::training::resources(p.threads)
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        crate::training::on_threads(p.threads, || evaluate(p, cx))
    }

    fn summary(_p: &Params, out: &Path) -> Option<String> {
        let r = EvalReport::read(out)?;
        Some(format!("{} held-out prompts:\n{}", r.prompts, r.table()))
    }
}

fn options(p: &Params, seed: u64) -> SampleOptions {
    SampleOptions {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        max_new_tokens: p.max_new_tokens,
        seed,
        stop_at: None,
    }
}

/// The few-shot examples of a run, drawn by [`Shots::draw`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shots(pub Vec<Example>);

/// One line, one sentence: ends with `.`, `!` or `?` and has no other sentence end.
fn one_sentence(s: &str) -> bool {
    let body = s.trim_end_matches(['.', '!', '?']);
    body.len() + 1 == s.len() && !body.contains(['.', '!', '?', '\n'])
}

fn same_question(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

impl Shots {
    /// `k` examples drawn with `seed` from `conversations` (a chat corpus's training split):
    /// single-turn, a one-line question and a one-sentence reply, the question not among
    /// `prompts`. The same arguments give the same examples. Errors when fewer than `k` qualify.
    pub fn draw(
        conversations: &[(String, Vec<Message>)],
        k: usize,
        seed: u64,
        prompts: &[Prompt],
    ) -> Result<Shots, String> {
        let mut eligible: Vec<Example> = conversations
            .iter()
            .filter_map(|(_, m)| match m.as_slice() {
                [u, a] if u.role == Role::User && a.role == Role::Assistant => Some(Example {
                    question: u.content.trim().to_string(),
                    answer: a.content.trim().to_string(),
                }),
                _ => None,
            })
            .filter(|s| {
                !s.question.is_empty() && !s.question.contains('\n') && one_sentence(&s.answer)
            })
            .filter(|s| !prompts.iter().any(|p| same_question(&p.prompt.display(), &s.question)))
            .collect();
        if eligible.len() < k {
            return Err(format!(
                "input `shots` has {} single-turn conversations with a one-line question (not a graded prompt) and a one-sentence reply; `few_shot: {k}` needs {k}",
                eligible.len()
            ));
        }
        // The first k of a seeded shuffle (Fisher-Yates, stopped after k draws).
        let mut rng = Rng::new(seed, Stream::Eval);
        for i in 0..k {
            let j = i + rng.below(eligible.len() - i);
            eligible.swap(i, j);
        }
        eligible.truncate(k);
        Ok(Shots(eligible))
    }

    /// The text a base model continues: the last `used` examples, then the prompt, on one line.
    pub fn prompt(&self, used: usize, prompt: &str) -> String {
        let mut s = String::new();
        for shot in &self.0[self.0.len() - used..] {
            write!(s, "Question: {} Answer: {} ", shot.question, shot.answer).unwrap();
        }
        write!(s, "Question: {} Answer:", prompt.trim()).unwrap();
        s
    }
}

/// A base model's answer: what it wrote up to the first newline, and up to the end of its
/// first sentence.
fn first_sentence(text: &str) -> &str {
    let line = text.split('\n').next().unwrap_or("");
    match line.find(['.', '!', '?']) {
        Some(i) => &line[..=i],
        None => line,
    }
}

/// Grades `responses` (text, length in tokens) to `prompts` with the tinyworld labeler.
pub fn score(
    name: &str,
    format: &'static str,
    prompts: &[Prompt],
    responses: &[(String, usize)],
) -> (ModelRow, Vec<Option<bool>>) {
    let verdicts: Vec<Option<bool>> = prompts
        .iter()
        .zip(responses)
        .map(|(p, (r, _))| {
            p.answer.as_ref().and_then(|a| {
                crate::tinyworld::grade(&json!({ "prompt": p.prompt, "answer": a }), r)
            })
        })
        .collect();
    let graded = verdicts.iter().flatten().count();
    let correct = verdicts.iter().filter(|v| **v == Some(true)).count();
    let n = prompts.len();
    let score = ModelRow {
        name: name.to_string(),
        format: format.to_string(),
        shots: 0,
        fewer_shots: 0,
        prompts: n,
        graded,
        correct,
        accuracy: (graded > 0).then(|| correct as f64 / graded as f64),
        mean_length: if n == 0 {
            0.0
        } else {
            responses.iter().map(|(_, l)| *l as f64).sum::<f64>() / n as f64
        },
        mean_reward: None,
        unscored: 0,
        kl_to_reference: None,
    };
    (score, verdicts)
}

/// One model's response to one prompt: the text, its length in tokens and, for a base
/// model, how many examples preceded it.
fn respond(
    m: &ChatModel,
    prompt: &PromptText,
    shots: &Shots,
    o: &SampleOptions,
) -> Result<(String, usize, usize), StageError> {
    if m.is_chat {
        let r = m.reply(&prompt.messages(), o, |_| {})?;
        return Ok((r.text.trim().to_string(), r.tokens, 0));
    }
    let block = m.config.block_size;
    let room = o.max_new_tokens.clamp(1, (block / 4).max(1));
    let mut used = shots.0.len();
    let mut ids = loop {
        let ids = m.tok.text_ids(&shots.prompt(used, &prompt.display()))?;
        if used == 0 || ids.len() + room <= block {
            break ids;
        }
        used -= 1;
    };
    if ids.len() >= block {
        ids.drain(..ids.len() + 1 - block);
    }
    let o = SampleOptions { stop_at: Some(m.tok.end_of_text), ..o.clone() };
    let mut out = Vec::new();
    let mut failed = None;
    // Stop once the text has a newline or a sentence end (decoding the few tokens so far).
    generate(&m.decoder, &ids, &o, |t| {
        out.push(t);
        match m.tok.decode(&out) {
            Ok(text) => !text.contains(['\n', '.', '!', '?']),
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let text = m.tok.decode(&out)?;
    Ok((first_sentence(&text).trim().to_string(), out.len(), used))
}

fn evaluate(p: &Params, cx: &RunCx) -> Result<(), StageError> {
    let models = cx.inputs.get("models").cloned().unwrap_or_default();
    if models.is_empty() {
        return Err(StageError::msg(
            "input `models` lists no model: give at least one, e.g. `models: [base, sft]`",
        ));
    }
    if !p.names.is_empty() && p.names.len() != models.len() {
        return Err(StageError::msg(format!(
            "`names` has {} names for {} models: give one per model, in the order of `models`",
            p.names.len(),
            models.len()
        )));
    }
    let names: Vec<String> = if p.names.is_empty() {
        (1..=models.len()).map(|i| format!("model {i}")).collect()
    } else {
        p.names.clone()
    };
    let mut prompts = read_prompts(cx.required_input("prompts")?, p.split, Evaluate::KIND)?;
    if p.limit > 0 {
        prompts.truncate(p.limit);
    }
    if prompts.is_empty() {
        return Err(StageError::msg("input `prompts` has no prompt records in the chosen `split`"));
    }
    let loaded: Vec<(ChatModel, &String)> = models
        .iter()
        .zip(&names)
        .map(|(dir, name)| {
            ChatModel::load(dir)
                .map(|m| (m, name))
                .map_err(|e| StageError::msg(format!("input `models` ({name}): {e}")))
        })
        .collect::<Result<_, _>>()?;
    let base = loaded.iter().find(|(m, _)| !m.is_chat).map(|(_, n)| n.as_str());
    let shots = match (base, p.few_shot, cx.input("shots")) {
        (None, _, _) | (_, 0, _) => Shots(Vec::new()),
        (Some(name), k, None) => {
            return Err(StageError::msg(format!(
                "model `{name}` has no chat template (a base model), so it is graded few-shot, on {k} solved examples from input `shots`, which is not wired\n   = help: add `shots: chat` (an ingest of the training conversations) to `inputs`, or set `few_shot: 0` to grade it on the bare question"
            )));
        }
        (Some(_), k, Some(dir)) => {
            let train: Vec<(String, Vec<Message>)> = Corpus::open(dir, "shots")?
                .chats(corpus::Split::Train, "evaluate")?
                .into_iter()
                .map(|c| (c.at, c.messages))
                .collect();
            Shots::draw(&train, k, cx.seed, &prompts).map_err(StageError::msg)?
        }
    };
    let scorer = match cx.input("reward") {
        Some(dir) => {
            Some(Scorer::load(dir).map_err(|e| StageError::msg(format!("input `reward`: {e}")))?)
        }
        None => None,
    };
    let reference = match cx.input("reference") {
        Some(dir) => Some(
            export::load(dir, DType::F32)
                .map_err(|e| StageError::msg(format!("input `reference`: {e}")))?
                .model,
        ),
        None => None,
    };
    let total = (models.len() * prompts.len()) as u64;
    let mut answers = String::new();
    let mut scores = Vec::new();
    for (mi, (m, name)) in loaded.iter().enumerate() {
        let mut responses = Vec::with_capacity(prompts.len());
        let mut fewer_shots = 0;
        for (i, pr) in prompts.iter().enumerate() {
            cx.check_cancelled()?;
            let (text, tokens, used) =
                respond(m, &pr.prompt, &shots, &options(p, cx.seed.wrapping_add(i as u64)))?;
            fewer_shots += usize::from(!m.is_chat && used < shots.0.len());
            responses.push((text, tokens));
            let done = (mi * prompts.len() + i + 1) as u64;
            cx.progress(done, Some(total), format!("{name}: {}/{}", i + 1, prompts.len()));
        }
        let (mut s, verdicts) =
            score(name, if m.is_chat { "chat" } else { "plain" }, &prompts, &responses);
        if !m.is_chat {
            (s.shots, s.fewer_shots) = (shots.0.len(), fewer_shots);
        }
        let rewards = match &scorer {
            Some(sc) => rewards(sc, &prompts, &responses, cx, &mut s)?,
            None => vec![None; prompts.len()],
        };
        for (((pr, (r, _)), v), rw) in prompts.iter().zip(&responses).zip(&verdicts).zip(&rewards) {
            let mut line = json!({ "model": name, "prompt": pr.prompt, "answer": pr.answer, "response": r, "correct": v });
            if scorer.is_some() {
                line["reward"] = json!(rw);
            }
            writeln!(answers, "{line}").unwrap();
        }
        if let (Some(reference), true) = (&reference, m.is_chat) {
            s.kl_to_reference =
                Some(kl_to_reference(&models[mi], reference, m, &prompts, &responses, cx)?);
        }
        if let Some(r) = s.mean_reward {
            cx.metric(&format!("{name}.mean_reward"), r);
        }
        if let Some(k) = s.kl_to_reference {
            cx.metric(&format!("{name}.kl_to_reference"), k);
        }
        if let Some(a) = s.accuracy {
            cx.metric(&format!("{name}.accuracy"), a);
        }
        cx.metric(&format!("{name}.mean_length"), s.mean_length);
        scores.push(s);
    }
    let report = EvalReport {
        prompts: prompts.len(),
        max_new_tokens: p.max_new_tokens,
        temperature: p.temperature,
        models: scores,
        few_shot_examples: shots.0,
    };
    let out = cx.out_dir;
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text)
            .map_err(StageError::io(format!("cannot write `{name}`")))
    };
    write("answers.jsonl", &answers)?;
    write("report.json", &(serde_json::to_string_pretty(&report).expect("plain data") + "\n"))?;
    write("report.md", &markdown(&report))
}

/// The mean over `m`'s answers (those that fit its context) of their KL divergence from
/// `reference` ([`answer_kl`]), `m` loaded from `dir` as a trainable model.
fn kl_to_reference(
    dir: &Path,
    reference: &Gpt,
    m: &ChatModel,
    prompts: &[Prompt],
    responses: &[(String, usize)],
    cx: &RunCx,
) -> Result<f64, StageError> {
    let policy = export::load(dir, DType::F32)?.model;
    if policy.config().vocab_size != reference.config().vocab_size {
        return Err(StageError::msg(format!(
            "input `reference` has {} tokens and a model {}: the KL needs one tokenizer\n   = help: wire `reference` to the model the others were fine-tuned from (e.g. `sft`)",
            reference.config().vocab_size,
            policy.config().vocab_size
        )));
    }
    let block = policy.config().block_size.min(reference.config().block_size);
    let mut rows = Vec::new();
    for (pr, (r, _)) in prompts.iter().zip(responses) {
        if let Some(row) = encode(&m.tok, &pr.prompt, r, block)? {
            rows.push(row);
        }
    }
    let mut sum = 0.0;
    for chunk in rows.chunks(16) {
        cx.check_cancelled()?;
        let ids: Vec<&Vec<u32>> = chunk.iter().map(|(ids, _)| ids).collect();
        let starts: Vec<usize> = chunk.iter().map(|(_, start)| *start).collect();
        let kl = answer_kl(&policy, reference, &ids, &starts, m.tok.end_of_text, m.tok.im_end)?;
        sum += kl.iter().sum::<f64>();
    }
    Ok(sum / rows.len().max(1) as f64)
}

/// The reward model's raw score of each response (none for an empty one), and their mean
/// into `s`.
fn rewards(
    sc: &Scorer,
    prompts: &[Prompt],
    responses: &[(String, usize)],
    cx: &RunCx,
    s: &mut ModelRow,
) -> Result<Vec<Option<f64>>, StageError> {
    let mut out = Vec::with_capacity(prompts.len());
    for (pr, (r, _)) in prompts.iter().zip(responses) {
        cx.check_cancelled()?;
        out.push(match sc.score(&pr.prompt, r) {
            Ok(v) => Some(v),
            Err(ScoreError::EmptyAnswer | ScoreError::TooLong { .. }) => None,
            Err(ScoreError::Model(e)) => {
                return Err(StageError::msg(format!("input `reward`: {e}")));
            }
        });
    }
    let scored: Vec<f64> = out.iter().flatten().copied().collect();
    s.unscored = out.len() - scored.len();
    s.mean_reward = (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64);
    Ok(out)
}

/// The report's note on how a base model is graded (`{k}`: its number of examples).
const FEW_SHOT_NOTE: &str = "A base model (`plain`) was never taught to answer a bare \
    question, so it is graded {k}-shot, as language-model papers grade base models: each prompt \
    follows the same {k} solved examples, drawn with the pipeline seed from the training \
    conversations (never a held-out prompt), as `Question: … Answer: …` on one line, and its \
    answer ends at the first newline or the end of its first sentence.";

/// The comparison table (with a mean-reward column when a reward model scored the answers).
pub fn markdown(r: &EvalReport) -> String {
    let mut s = String::new();
    let how = if r.temperature == 0.0 {
        "greedy".to_string()
    } else {
        format!("sampled at temperature {}", r.temperature)
    };
    let reward = r.models.iter().any(|m| m.mean_reward.is_some());
    writeln!(
        s,
        "# Evaluation\n\n{} held-out prompts, answers {how}, at most {} new tokens.\n",
        r.prompts, r.max_new_tokens
    )
    .unwrap();
    let kl = r.models.iter().any(|m| m.kl_to_reference.is_some());
    let (mut head, mut rule) = if reward { (" mean reward |", "---|") } else { ("", "") };
    let (kl_head, kl_rule) = (format!("{head} KL to reference (nats) |"), format!("{rule}---|"));
    if kl {
        (head, rule) = (&kl_head, &kl_rule);
    }
    writeln!(s, "| model | format | answer accuracy | correct / graded | mean response length (tokens) |{head}").unwrap();
    writeln!(s, "|---|---|---|---|---|{rule}").unwrap();
    for m in &r.models {
        let acc = m.accuracy.map_or("n/a".to_string(), |a| format!("{:.1}%", 100.0 * a));
        let format = if m.format == "plain" {
            format!("plain, {}-shot", m.shots)
        } else {
            m.format.to_string()
        };
        let mut rw = if reward {
            format!(" {} |", m.mean_reward.map_or("n/a".to_string(), |v| format!("{v:.3}")))
        } else {
            String::new()
        };
        if kl {
            rw += &format!(
                " {} |",
                m.kl_to_reference.map_or("n/a".to_string(), |v| format!("{v:.3}"))
            );
        }
        writeln!(
            s,
            "| {} | {format} | {acc} | {} / {} | {:.1} |{rw}",
            m.name, m.correct, m.graded, m.mean_length
        )
        .unwrap();
    }
    for m in r.models.iter().filter(|m| m.unscored > 0) {
        writeln!(s, "\n`{}`: {} of {} answers were empty or too long for the reward model, left out of its mean reward.", m.name, m.unscored, m.prompts).unwrap();
    }
    if let Some(m) = r.models.iter().find(|m| m.format == "plain") {
        writeln!(s, "\n{}", FEW_SHOT_NOTE.replace("{k}", &m.shots.to_string())).unwrap();
        for m in r.models.iter().filter(|m| m.fewer_shots > 0) {
            writeln!(s, "For {} of {} prompts `{}` saw fewer examples, to leave room for its answer in the context window.", m.fewer_shots, m.prompts, m.name).unwrap();
        }
        if !r.few_shot_examples.is_empty() {
            writeln!(s, "\nThe examples:\n").unwrap();
            for shot in &r.few_shot_examples {
                writeln!(s, "- Question: {} / Answer: {}", shot.question, shot.answer).unwrap();
            }
        }
    }
    s
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    use crate::data::prompts::Splits;

    pub fn few_shot() -> usize {
        3
    }

    pub fn max_new_tokens() -> usize {
        48
    }

    pub fn split() -> Splits {
        Splits::All
    }

    pub fn top_p() -> f64 {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::formats::{self, Record};

    fn pr(prompt: &str, answer: Option<&str>) -> Prompt {
        Prompt { prompt: prompt.into(), answer: answer.map(String::from) }
    }

    /// Hand count: 2 of the 3 gradable responses are right; the fourth prompt has no answer.
    #[test]
    fn accuracy_equals_a_hand_count() {
        let prompts = [
            pr("What is 7 plus 5?", Some("12")),
            pr("What colour is the sky?", Some("blue")),
            pr("What is 9 minus 3?", Some("6")),
            pr("Hello!", None),
        ];
        let responses: Vec<(String, usize)> = [
            ("7 plus 5 is 12.", 6),
            ("The sky is green.", 5),
            ("9 minus 3 is 6.", 6),
            ("Hello! How can I help?", 7),
        ]
        .iter()
        .map(|(r, n)| (r.to_string(), *n))
        .collect();
        let (s, verdicts) = score("m", "chat", &prompts, &responses);
        assert_eq!(verdicts, vec![Some(true), Some(false), Some(true), None]);
        assert_eq!((s.graded, s.correct, s.prompts), (3, 2, 4));
        assert_eq!(s.accuracy, Some(2.0 / 3.0));
        assert_eq!(s.mean_length, 6.0);
        let md = markdown(&EvalReport {
            prompts: 4,
            max_new_tokens: 48,
            temperature: 0.0,
            models: vec![s.clone()],
            few_shot_examples: Vec::new(),
        });
        assert!(md.contains("| m | chat | 66.7% | 2 / 3 | 6.0 |"), "{md}");
        assert!(!md.to_lowercase().contains("reward"), "no reward column without a reward model");
        // With a reward model: a mean-reward column, n/a for a model it could not score.
        let with = ModelRow { mean_reward: Some(-0.25), ..s.clone() };
        let without = ModelRow { name: "b".into(), mean_reward: None, unscored: 4, ..s };
        let md = markdown(&EvalReport {
            prompts: 4,
            max_new_tokens: 48,
            temperature: 0.0,
            models: vec![with, without],
            few_shot_examples: Vec::new(),
        });
        assert!(
            md.contains("| mean reward |")
                && md.contains("| m | chat | 66.7% | 2 / 3 | 6.0 | -0.250 |")
                && md.contains("| b | chat | 66.7% | 2 / 3 | 6.0 | n/a |"),
            "{md}"
        );
        assert!(md.contains("`b`: 4 of 4 answers were empty or too long"), "{md}");
    }

    fn conv(q: &str, a: &str) -> (String, Vec<Message>) {
        (
            q.to_string(),
            vec![
                Message { role: Role::User, content: q.into() },
                Message { role: Role::Assistant, content: a.into() },
            ],
        )
    }

    fn records(name: &str, seed: u64) -> Vec<Record> {
        crate::tinyworld::dataset(name, seed)
            .unwrap()
            .iter()
            .map(|v| formats::parse_json(&v.to_string()).unwrap())
            .collect()
    }

    /// On tinyworld's own data: the examples are the same for a seed, change with it, are
    /// one-sentence training replies, and none is a held-out prompt.
    #[test]
    fn few_shot_examples_are_fixed_by_the_seed_and_come_from_training_data() {
        let convs: Vec<(String, Vec<Message>)> = records("chat", 1234)
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Record::Chat { messages, .. } => (format!("chat {i}"), messages),
                other => panic!("{other:?}"),
            })
            .collect();
        let prompts: Vec<Prompt> = records("prompts", 1234)
            .into_iter()
            .map(|r| match r {
                Record::Prompt { prompt, answer, .. } => {
                    Prompt { prompt, answer: answer.map(|a| a.as_str().unwrap().to_string()) }
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let a = Shots::draw(&convs, 3, 1234, &prompts).unwrap();
        assert_eq!(a.0.len(), 3);
        assert_eq!(a, Shots::draw(&convs, 3, 1234, &prompts).unwrap(), "same seed, same examples");
        assert_ne!(
            a,
            Shots::draw(&convs, 3, 1235, &prompts).unwrap(),
            "the seed picks the examples"
        );
        for shot in &a.0 {
            assert!(
                convs
                    .iter()
                    .any(|(_, m)| m[0].content == shot.question && m[1].content == shot.answer),
                "{shot:?} is not a training conversation"
            );
            assert!(
                !prompts.iter().any(|p| p.prompt.display() == shot.question),
                "{shot:?} is a held-out prompt"
            );
            assert!(one_sentence(&shot.answer), "{shot:?}");
        }
    }

    /// However the seed falls, a question that is also a graded prompt is never an example
    /// (compared without case and surrounding spaces), nor a multi-sentence or multi-turn one.
    #[test]
    fn a_graded_prompt_is_never_a_few_shot_example() {
        let mut convs: Vec<(String, Vec<Message>)> = (0..8)
            .map(|i| conv(&format!("What is {i} plus 1?"), &format!("{i} plus 1 is {}.", i + 1)))
            .collect();
        convs.push(conv("Tell me about Tom.", "Tom is 7. Tom lives in Oakvale."));
        convs.push(conv("Hi!", "Hello!\nHow can I help?"));
        let mut three = conv("Bye!", "Bye!");
        three.1.push(Message { role: Role::User, content: "Bye?".into() });
        convs.push(three);
        let graded: Vec<Prompt> =
            (0..6).map(|i| pr(&format!(" what is {i} PLUS 1? "), Some("x"))).collect();
        for seed in 0..50 {
            let mut got: Vec<String> = Shots::draw(&convs, 2, seed, &graded)
                .unwrap()
                .0
                .into_iter()
                .map(|s| s.question)
                .collect();
            got.sort();
            assert_eq!(got, ["What is 6 plus 1?", "What is 7 plus 1?"], "seed {seed}");
        }
        let err = Shots::draw(&convs, 3, 0, &graded).unwrap_err();
        assert!(
            err.contains("has 2 single-turn conversations")
                && err.contains("`few_shot: 3` needs 3"),
            "{err}"
        );
    }

    #[test]
    fn the_few_shot_prompt_and_the_answer_cut() {
        let shots = Shots(vec![
            Example { question: "What is 1 plus 1?".into(), answer: "1 plus 1 is 2.".into() },
            Example { question: "Hi!".into(), answer: "Hello!".into() },
        ]);
        assert_eq!(
            shots.prompt(2, "What colour is the sky?"),
            "Question: What is 1 plus 1? Answer: 1 plus 1 is 2. Question: Hi! Answer: Hello! Question: What colour is the sky? Answer:"
        );
        assert_eq!(
            shots.prompt(1, "Bye"),
            "Question: Hi! Answer: Hello! Question: Bye Answer:",
            "the last examples are kept"
        );
        assert_eq!(shots.prompt(0, "Bye "), "Question: Bye Answer:");
        assert_eq!(first_sentence(" The sky is blue. Grass is green."), " The sky is blue.");
        assert_eq!(first_sentence(" 3, 4, 5\nQuestion: x"), " 3, 4, 5");
        assert_eq!(first_sentence(" Hello! How"), " Hello!");
        let md = markdown(&EvalReport {
            prompts: 1,
            max_new_tokens: 8,
            temperature: 0.0,
            models: vec![ModelRow {
                name: "base".into(),
                format: "plain".into(),
                shots: 2,
                fewer_shots: 1,
                prompts: 1,
                graded: 1,
                correct: 1,
                accuracy: Some(1.0),
                mean_length: 3.0,
                mean_reward: None,
                unscored: 0,
                kl_to_reference: None,
            }],
            few_shot_examples: shots.0.clone(),
        });
        assert!(md.contains("| base | plain, 2-shot | 100.0% | 1 / 1 | 3.0 |"), "{md}");
        assert!(
            md.contains("graded 2-shot")
                && md.contains("For 1 of 1 prompts `base` saw fewer examples"),
            "{md}"
        );
        assert!(md.contains("- Question: What is 1 plus 1? / Answer: 1 plus 1 is 2."), "{md}");
    }
}
