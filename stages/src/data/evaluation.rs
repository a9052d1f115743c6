//! An `evaluate` artifact as its readers (`hone report`) see it: `report.json`
//! ([`EvalReport`]: the settings and one row per model) and `answers.jsonl` ([`Answer`]: one
//! line per model and prompt).
//!
//! `evaluate` writes `report.json` with these same types (it re-exports them); a test here
//! reads what they write and writes it back unchanged. Readers ignore fields they do not know.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::data::formats::PromptText;

pub const REPORT: &str = "report.json";
pub const ANSWERS: &str = "answers.jsonl";

/// `report.json`: the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Prompts each model answered.
    pub prompts: usize,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub models: Vec<ModelRow>,
    /// The solved examples base models saw (empty when no model is a base model).
    pub few_shot_examples: Vec<Example>,
}

/// One model's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    pub name: String,
    /// `chat` or `plain`.
    pub format: String,
    /// Solved examples before each prompt (0 for a chat model).
    pub shots: usize,
    /// Prompts that got fewer examples, to leave room for the answer.
    pub fewer_shots: usize,
    pub prompts: usize,
    /// Prompts with a checkable answer.
    pub graded: usize,
    pub correct: usize,
    /// correct / graded; `None` when nothing could be graded.
    pub accuracy: Option<f64>,
    /// Mean response length in tokens.
    pub mean_length: f64,
    /// Mean score under the reward model, when one was wired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_reward: Option<f64>,
    /// Answers the reward model could not score.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unscored: usize,
    /// The mean over answers of the KL divergence from the reference model, summed over each
    /// answer's tokens (nats), when a reference was wired (chat models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_to_reference: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A solved example shown to base models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub question: String,
    pub answer: String,
}

/// One line of `answers.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub model: String,
    pub prompt: PromptText,
    /// The reference answer, when the prompt has one.
    pub answer: Option<String>,
    pub response: String,
    /// Whether the response holds the answer (`None`: nothing to check).
    pub correct: Option<bool>,
    /// The reward model's score, when one was wired (`None` inside: an empty response).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub reward: Option<Option<f64>>,
}

/// A field that is there, `null` or not.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

impl EvalReport {
    /// The `report.json` in `dir`, if it is one `evaluate` wrote.
    pub fn read(dir: &Path) -> Option<EvalReport> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(REPORT)).ok()?).ok()
    }

    /// The comparison as a plain-text table for a terminal, one row per model: answer
    /// accuracy, mean reward (`-` without a reward model) and mean response length.
    pub fn table(&self) -> String {
        let pct = |a: Option<f64>| a.map_or("n/a".to_string(), |a| format!("{:.1}%", 100.0 * a));
        let kl = self.models.iter().any(|m| m.kl_to_reference.is_some());
        let mut rows = vec![vec![
            "model".to_string(),
            "answer accuracy".into(),
            "mean reward".into(),
            "mean length".into(),
        ]];
        if kl {
            rows[0].push("KL to reference".into());
        }
        for m in &self.models {
            let reward = m.mean_reward.map_or("-".to_string(), |r| format!("{r:.3}"));
            let mut row =
                vec![m.name.clone(), pct(m.accuracy), reward, format!("{:.1}", m.mean_length)];
            if kl {
                row.push(m.kl_to_reference.map_or("-".to_string(), |k| format!("{k:.3}")));
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            // The model's name to the left, the figures to the right.
            let mut line = format!("{:<w$}", r[0], w = widths[0]);
            for (cell, w) in r.iter().zip(&widths).skip(1) {
                line.push_str(&format!("  {cell:>w$}"));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The lines of `answers.jsonl` in `dir` that read as answers (none when it is missing).
pub fn read_answers(dir: &Path) -> Vec<Answer> {
    let text = std::fs::read_to_string(dir.join(ANSWERS)).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terminal table: a header and one aligned row per model; a missing reward is `-`.
    #[test]
    fn table_lines_up_one_row_per_model() {
        let row = |name: &str, accuracy: Option<f64>, reward: Option<f64>, len: f64| ModelRow {
            name: name.into(),
            format: "chat".into(),
            shots: 0,
            fewer_shots: 0,
            prompts: 10,
            graded: 10,
            correct: 0,
            accuracy,
            mean_length: len,
            mean_reward: reward,
            unscored: 0,
            kl_to_reference: None,
        };
        let r = EvalReport {
            prompts: 10,
            max_new_tokens: 32,
            temperature: 0.0,
            models: vec![
                row("base", Some(0.1), None, 9.4),
                row("sft", Some(0.681), Some(-1.5), 12.0),
                row("ppo", None, Some(0.25), 10.0),
            ],
            few_shot_examples: Vec::new(),
        };
        assert_eq!(
            r.table(),
            "model  answer accuracy  mean reward  mean length\n\
             base             10.0%            -          9.4\n\
             sft              68.1%       -1.500         12.0\n\
             ppo                n/a        0.250         10.0\n"
        );
    }

    /// What `evaluate` writes reads back field for field, optional fields absent or not.
    #[test]
    fn reads_what_evaluate_writes() {
        let row = |name: &str, format: &str, reward: Option<f64>, unscored: usize| ModelRow {
            name: name.into(),
            format: format.into(),
            shots: if format == "plain" { 3 } else { 0 },
            fewer_shots: 1,
            prompts: 4,
            graded: 3,
            correct: 2,
            accuracy: Some(2.0 / 3.0),
            mean_length: 5.25,
            mean_reward: reward,
            unscored,
            kl_to_reference: None,
        };
        for models in [
            vec![
                row("base", "plain", None, 0),
                ModelRow { accuracy: None, graded: 0, correct: 0, ..row("sft", "chat", None, 0) },
            ],
            vec![row("sft", "chat", Some(-0.5), 1), row("ppo", "chat", Some(1.5), 0)],
        ] {
            let report = EvalReport {
                prompts: 4,
                max_new_tokens: 16,
                temperature: 0.0,
                models,
                few_shot_examples: vec![Example {
                    question: "What is 2 plus 2?".into(),
                    answer: "4.".into(),
                }],
            };
            let written = serde_json::to_string_pretty(&report).unwrap();
            let read: EvalReport =
                serde_json::from_str(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
            assert_eq!(serde_json::to_string_pretty(&read).unwrap(), written);
        }
    }

    #[test]
    fn answers_with_and_without_a_reward() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            r#"{"model":"base","prompt":"2+2?","answer":"4","response":"4","correct":true}"#,
            r#"{"model":"sft","prompt":"Hi!","answer":null,"response":"","correct":null,"reward":null}"#,
            r#"{"model":"sft","prompt":"2+2?","answer":"4","response":"5","correct":false,"reward":-1.5}"#,
            "not json",
        ];
        std::fs::write(dir.path().join(ANSWERS), lines.join("\n")).unwrap();
        let a = read_answers(dir.path());
        assert_eq!(a.len(), 3);
        assert_eq!((a[0].reward, a[1].reward, a[2].reward), (None, Some(None), Some(Some(-1.5))));
        assert_eq!((a[1].answer.as_deref(), a[1].correct), (None, None));
        assert!(read_answers(&dir.path().join("nowhere")).is_empty());
    }
}
