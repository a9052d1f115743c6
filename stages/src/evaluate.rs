//! `evaluate`: answer held-out prompts with several models and compare them.
//!
//! ```yaml
//! eval:
//!   uses: evaluate
//!   inputs: { models: [base, sft], prompts: prompts }   # MODEL stages; an ingest of prompt records
//!   with: { names: [base, sft], max_new_tokens: 48 }
//! ```
//!
//! Each model answers every prompt record (`{"prompt", "answer"?}`) of the corpus, greedily
//! by default (`temperature: 0`), else sampled with a seed derived from the pipeline seed and
//! the prompt's index, so a run is reproducible. A chat model (its `tokenizer_config.json` has
//! a `chat_template`, as `sft` writes) gets the prompt as a ChatML user message and its reply
//! ends at `<|im_end|>`; a base model gets the prompt followed by a newline, and its answer is
//! the first line of what it writes (until `<|endoftext|>`). The report says which.
//!
//! A record with an `answer` is graded with tinyworld's rule labeler
//! ([`crate::tinyworld::grade`]): answer accuracy is correct / graded. Mean response length is
//! in tokens, over every prompt. (A mean-reward column joins once a reward model exists.)
//!
//! **Outputs** (port `metrics`): `report.md` (a table, one row per model), `report.json`
//! ([`Report`]) and `answers.jsonl` (one line per model and prompt: `model`, `prompt`,
//! `answer`, `response`, `correct`). Metrics: `<name>.accuracy`, `<name>.mean_length`.

use std::fmt::Write as _;
use std::path::Path;

use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::data::corpus::{self, Corpus};
use crate::data::formats::{Message, Role};
use crate::model::chat::ChatModel;
use crate::model::sample::{SampleOptions, generate};
use crate::ports;

pub struct Evaluate;

/// Which part of the prompt corpus to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    All,
    Train,
    Val,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// A name per model, in the order of `models` (default: `model 1`, `model 2`, ...).
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default = "d_split")]
    pub split: Split,
    /// Answer at most this many prompts (the first ones); 0: all.
    #[serde(default)]
    pub limit: usize,
    #[serde(default = "d_max_new_tokens")]
    pub max_new_tokens: usize,
    /// 0: greedy.
    #[serde(default)]
    pub temperature: f64,
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "d_top_p")]
    pub top_p: f64,
    /// Worker threads; 0 uses them all.
    #[serde(default)]
    pub threads: usize,
}

fn d_split() -> Split {
    Split::All
}
fn d_max_new_tokens() -> usize {
    48
}
fn d_top_p() -> f64 {
    1.0
}

impl Stage for Evaluate {
    type Params = Params;
    const KIND: &'static str = "evaluate";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "answer held-out prompts with several models; compare answer accuracy and response length";
    const INPUTS: Inputs = Inputs::Fixed(&[Port::many("models", ports::MODEL), Port::required("prompts", ports::PROMPTS)]);
    const OUTPUTS: &'static [Port] = &[Port::required("metrics", ports::METRICS)];

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        if p.max_new_tokens == 0 {
            out.push(ParamProblem::at(&["max_new_tokens"], "`max_new_tokens` must be at least 1").help("tinyworld answers are one sentence: 48 is plenty"));
        }
        for problem in options(p, 0).problems() {
            let field = if problem.starts_with("temperature") { "temperature" } else { "top_p" };
            out.push(ParamProblem::at(&[field], problem));
        }
        for (i, n) in p.names.iter().enumerate() {
            if n.trim().is_empty() || n.contains('|') || n.contains('\n') {
                out.push(ParamProblem::at(&["names"], format!("name {} ({n:?}) must be non-empty, on one line, without `|`", i + 1)));
            }
            if p.names[..i].contains(n) {
                out.push(ParamProblem::at(&["names"], format!("`{n}` is listed twice")).help("give each model its own name"));
            }
        }
        out
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        crate::training::on_threads(p.threads, || evaluate(p, cx))
    }
}

fn options(p: &Params, seed: u64) -> SampleOptions {
    SampleOptions { temperature: p.temperature, top_k: p.top_k, top_p: p.top_p, max_new_tokens: p.max_new_tokens, seed, stop_at: None }
}

/// One prompt to answer: its text and its checkable answer, if any.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub prompt: String,
    pub answer: Option<String>,
}

/// One model's row of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelScore {
    pub name: String,
    /// `chat` (ChatML) or `plain` (a base model: prompt + newline, first line of the reply).
    pub format: &'static str,
    pub prompts: usize,
    /// Prompts with a checkable answer.
    pub graded: usize,
    pub correct: usize,
    /// correct / graded; `None` when nothing could be graded.
    pub accuracy: Option<f64>,
    /// Mean response length in tokens, over every prompt.
    pub mean_length: f64,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub prompts: usize,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub models: Vec<ModelScore>,
}

/// Grades `responses` (text, length in tokens) to `prompts` with the tinyworld labeler.
pub fn score(name: &str, format: &'static str, prompts: &[Prompt], responses: &[(String, usize)]) -> (ModelScore, Vec<Option<bool>>) {
    let verdicts: Vec<Option<bool>> = prompts
        .iter()
        .zip(responses)
        .map(|(p, (r, _))| p.answer.as_ref().and_then(|a| crate::tinyworld::grade(&json!({ "prompt": p.prompt, "answer": a }), r)))
        .collect();
    let graded = verdicts.iter().flatten().count();
    let correct = verdicts.iter().filter(|v| **v == Some(true)).count();
    let n = prompts.len();
    let score = ModelScore {
        name: name.to_string(),
        format,
        prompts: n,
        graded,
        correct,
        accuracy: (graded > 0).then(|| correct as f64 / graded as f64),
        mean_length: if n == 0 { 0.0 } else { responses.iter().map(|(_, l)| *l as f64).sum::<f64>() / n as f64 },
    };
    (score, verdicts)
}

/// The prompt records of the corpus wired to `prompts`, in the chosen split.
fn read_prompts(dir: &Path, split: Split) -> Result<Vec<Prompt>, StageError> {
    let corpus = Corpus::open(dir, "prompts")?;
    let splits: &[corpus::Split] = match split {
        Split::All => &corpus::Split::BOTH,
        Split::Train => &[corpus::Split::Train],
        Split::Val => &[corpus::Split::Val],
    };
    let mut out = Vec::new();
    for &s in splits {
        out.extend(corpus.prompts(s, "evaluate")?.into_iter().map(|r| Prompt {
            prompt: r.prompt,
            answer: r.answer.map(|a| match a {
                Value::String(s) => s,
                other => other.to_string(),
            }),
        }));
    }
    Ok(out)
}

/// One model's response to one prompt: the text and its length in tokens.
fn respond(m: &ChatModel, prompt: &str, o: &SampleOptions) -> Result<(String, usize), StageError> {
    if m.is_chat {
        let r = m.reply(&[Message { role: Role::User, content: prompt.to_string() }], o, |_| {})?;
        return Ok((r.text.trim().to_string(), r.tokens));
    }
    let mut ids = m.tok.text_ids(&format!("{prompt}\n"))?;
    let block = m.config.block_size;
    if ids.len() >= block {
        ids.drain(..ids.len() + 1 - block);
    }
    let o = SampleOptions { stop_at: Some(m.tok.end_of_text), ..o.clone() };
    let newline = m.tok.text_ids("\n")?;
    let mut out = Vec::new();
    // The answer is the first line: stop at a newline token.
    generate(&m.model, &ids, &o, |t| {
        if newline.len() == 1 && t == newline[0] {
            return false;
        }
        out.push(t);
        true
    })?;
    let text = m.tok.decode(&out)?;
    let first = text.lines().next().unwrap_or("").trim().to_string();
    Ok((first, out.len()))
}

fn evaluate(p: &Params, cx: &RunCx) -> Result<(), StageError> {
    let models = cx.inputs.get("models").cloned().unwrap_or_default();
    if models.is_empty() {
        return Err(StageError::msg("input `models` lists no model: give at least one, e.g. `models: [base, sft]`"));
    }
    if !p.names.is_empty() && p.names.len() != models.len() {
        return Err(StageError::msg(format!("`names` has {} names for {} models: give one per model, in the order of `models`", p.names.len(), models.len())));
    }
    let names: Vec<String> = if p.names.is_empty() { (1..=models.len()).map(|i| format!("model {i}")).collect() } else { p.names.clone() };
    let mut prompts = read_prompts(cx.required_input("prompts")?, p.split)?;
    if p.limit > 0 {
        prompts.truncate(p.limit);
    }
    if prompts.is_empty() {
        return Err(StageError::msg("input `prompts` has no prompt records in the chosen `split`"));
    }
    let total = (models.len() * prompts.len()) as u64;
    let mut answers = String::new();
    let mut scores = Vec::new();
    for (mi, (dir, name)) in models.iter().zip(&names).enumerate() {
        let m = ChatModel::load(dir).map_err(|e| StageError::msg(format!("input `models` ({name}): {e}")))?;
        let mut responses = Vec::with_capacity(prompts.len());
        for (i, pr) in prompts.iter().enumerate() {
            cx.check_cancelled()?;
            responses.push(respond(&m, &pr.prompt, &options(p, cx.seed.wrapping_add(i as u64)))?);
            let done = (mi * prompts.len() + i + 1) as u64;
            cx.progress(done, Some(total), format!("{name}: {}/{}", i + 1, prompts.len()));
        }
        let (s, verdicts) = score(name, if m.is_chat { "chat" } else { "plain" }, &prompts, &responses);
        for ((pr, (r, _)), v) in prompts.iter().zip(&responses).zip(&verdicts) {
            let line = json!({ "model": name, "prompt": pr.prompt, "answer": pr.answer, "response": r, "correct": v });
            writeln!(answers, "{line}").unwrap();
        }
        if let Some(a) = s.accuracy {
            cx.metric(&format!("{name}.accuracy"), a);
        }
        cx.metric(&format!("{name}.mean_length"), s.mean_length);
        scores.push(s);
    }
    let report = Report { prompts: prompts.len(), max_new_tokens: p.max_new_tokens, temperature: p.temperature, models: scores };
    let out = cx.out_dir;
    let write = |name: &str, text: &str| std::fs::write(out.join(name), text).map_err(StageError::io(format!("cannot write `{name}`")));
    write("answers.jsonl", &answers)?;
    write("report.json", &(serde_json::to_string_pretty(&report).expect("plain data") + "\n"))?;
    write("report.md", &markdown(&report))
}

/// The comparison table.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let how = if r.temperature == 0.0 { "greedy".to_string() } else { format!("sampled at temperature {}", r.temperature) };
    writeln!(s, "# Evaluation\n\n{} held-out prompts, answers {how}, at most {} new tokens.\n", r.prompts, r.max_new_tokens).unwrap();
    writeln!(s, "| model | format | answer accuracy | correct / graded | mean response length (tokens) |").unwrap();
    writeln!(s, "|---|---|---|---|---|").unwrap();
    for m in &r.models {
        let acc = m.accuracy.map_or("n/a".to_string(), |a| format!("{:.1}%", 100.0 * a));
        writeln!(s, "| {} | {} | {acc} | {} / {} | {:.1} |", m.name, m.format, m.correct, m.graded, m.mean_length).unwrap();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(prompt: &str, answer: Option<&str>) -> Prompt {
        Prompt { prompt: prompt.into(), answer: answer.map(String::from) }
    }

    /// Hand count: 2 of the 3 gradable responses are right; the fourth prompt has no answer.
    #[test]
    fn accuracy_equals_a_hand_count() {
        let prompts = [pr("What is 7 plus 5?", Some("12")), pr("What colour is the sky?", Some("blue")), pr("What is 9 minus 3?", Some("6")), pr("Hello!", None)];
        let responses: Vec<(String, usize)> =
            [("7 plus 5 is 12.", 6), ("The sky is green.", 5), ("9 minus 3 is 6.", 6), ("Hello! How can I help?", 7)].iter().map(|(r, n)| (r.to_string(), *n)).collect();
        let (s, verdicts) = score("m", "chat", &prompts, &responses);
        assert_eq!(verdicts, vec![Some(true), Some(false), Some(true), None]);
        assert_eq!((s.graded, s.correct, s.prompts), (3, 2, 4));
        assert_eq!(s.accuracy, Some(2.0 / 3.0));
        assert_eq!(s.mean_length, 6.0);
        let md = markdown(&Report { prompts: 4, max_new_tokens: 48, temperature: 0.0, models: vec![s] });
        assert!(md.contains("| m | chat | 66.7% | 2 / 3 | 6.0 |"), "{md}");
        assert!(!md.to_lowercase().contains("reward"), "no reward column before a reward model exists");
    }
}
