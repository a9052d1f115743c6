//! Candidates: what the `sample` stage writes and the `rank` stage reads (port type
//! `candidates`).
//!
//! `candidates.jsonl` holds one [`Candidates`] a line, one per prompt:
//! `{"prompt": "...", "answer": "..."?, "responses": ["...", ...K], "tokens": [n, ...K],
//! "logprobs": [sum_logprob, ...K], "finished": [true, ...K]}`: `answer` is copied from the
//! prompt record when it has one; `tokens` counts each response's sampled tokens (its stop
//! token included when it has one); `logprobs` sums their log-probabilities; `finished` says
//! the response ended with the stop token rather than at the token limit. The stage's
//! `meta.json` (model digest, K, sampling params, counts) sits beside it.
//!
//! [`read`] checks every record and names the file and line of the first bad one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::formats::PromptText;

/// The file name inside a `candidates` artifact.
pub const FILE: &str = "candidates.jsonl";

/// One prompt and its K sampled responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidates {
    /// A string, or a conversation ending in a user turn ([`PromptText`]).
    pub prompt: PromptText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    pub responses: Vec<String>,
    pub tokens: Vec<usize>,
    pub logprobs: Vec<f64>,
    pub finished: Vec<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum CandidatesError {
    #[error("cannot read `{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Record { path: PathBuf, line: usize, message: String },
}

impl Candidates {
    /// The per-response lists have one entry per response.
    pub fn check(&self) -> Result<(), String> {
        let k = self.responses.len();
        for (name, n) in [
            ("tokens", self.tokens.len()),
            ("logprobs", self.logprobs.len()),
            ("finished", self.finished.len()),
        ] {
            if n != k {
                return Err(format!(
                    "`{name}` has {n} entries for {k} responses: give one per response"
                ));
            }
        }
        Ok(())
    }
}

/// Parses and checks one line of `candidates.jsonl`.
pub fn parse_line(line: &str) -> Result<Candidates, String> {
    let c: Candidates = serde_json::from_str(line)
        .map_err(|e| format!("not a candidates record ({e}); expected {{\"prompt\", \"responses\", \"tokens\", \"logprobs\", \"finished\"}}"))?;
    c.check()?;
    Ok(c)
}

/// Reads the candidates of a `candidates` artifact (its [`FILE`]); blank lines are skipped.
pub fn read_dir(dir: &Path) -> Result<Vec<Candidates>, CandidatesError> {
    let path = dir.join(FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|source| CandidatesError::Io { path: path.clone(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|message| CandidatesError::Record {
                path: path.clone(),
                line: i + 1,
                message,
            })
        })
        .collect()
}

/// One JSON line (with its newline).
pub fn to_line(c: &Candidates) -> String {
    let mut s = serde_json::to_string(c).expect("plain data serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_ones_name_their_line() {
        let c = Candidates {
            prompt: "What is 2 plus 2?".into(),
            answer: Some("4".into()),
            responses: vec!["2 plus 2 is 4.".into(), "5".into()],
            tokens: vec![7, 2],
            logprobs: vec![-3.5, -9.25],
            finished: vec![true, false],
        };
        let dir = tempfile::tempdir().unwrap();
        let no_answer = Candidates { answer: None, ..c.clone() };
        std::fs::write(dir.path().join(FILE), to_line(&c) + "\n" + &to_line(&no_answer)).unwrap();
        assert_eq!(read_dir(dir.path()).unwrap(), vec![c.clone(), no_answer.clone()]);
        assert!(!to_line(&no_answer).contains("answer"));
        let bad = to_line(&c).replace("\"tokens\":[7,2]", "\"tokens\":[7]");
        std::fs::write(dir.path().join(FILE), to_line(&c) + &bad).unwrap();
        let err = read_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("candidates.jsonl:2: `tokens` has 1 entries for 2 responses"),
            "{err}"
        );
    }
}
