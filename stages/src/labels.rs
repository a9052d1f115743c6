//! Human labels for the `rank` stage's `human` labeler: the labels file ([`Labels`]) and the
//! interactive session of `hone label` ([`session`]).
//!
//! **The labels file** (JSONL, in the workspace, `labels.jsonl` by default) holds one
//! [`Label`] a line, in the order they were given: `{"key", "prompt", "ranking"}` or
//! `{"key", "prompt", "skip": true}`. The key is a digest of the prompt and its responses
//! ([`key`]), so a label belongs to exactly those candidates: new candidates (a changed model,
//! other sampling) are asked anew, and labels of old ones stay in the file unused. Every
//! answer rewrites the file atomically (a temporary file renamed over it), so quitting or a
//! kill at any moment loses nothing already answered. The `rank` stage reads the file, and
//! its digest is part of the stage's key: a rerun never asks again, and changing a label
//! reruns `rank` and what follows it, nothing before.
//!
//! **A session** shows each unlabelled prompt with its numbered responses and reads an order,
//! best first: `2 1 4 3`; `=` ties (`2=1 4 3`: 2 and 1 tie for best). `s` skips the prompt
//! (it gets no ranking), `u` undoes the last answer, `h` shows help, `q` (or end of input)
//! quits; the progress (`7/12`) is in each prompt's header.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::candidates::Candidates;

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// [`key`] of the candidates it ranks.
    pub key: String,
    /// For a person reading the file.
    pub prompt: String,
    /// Groups of response indices (from 0), best first; absent when skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking: Option<Vec<Vec<usize>>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("cannot read the labels file `{}`: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot save the labels file `{}`: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("{}:{line}: {message}\n   = help: fix or delete that line (it is one answer; `hone label` asks it again)", path.display())]
    Record { path: PathBuf, line: usize, message: String },
    #[error("terminal: {0}")]
    Terminal(std::io::Error),
}

/// The key of a prompt and its responses: their digest (16 hex digits).
pub fn key(c: &Candidates) -> String {
    let canonical = serde_json::to_vec(&(&c.prompt, &c.responses)).expect("plain data");
    blake3::hash(&canonical).to_hex()[..16].to_string()
}

/// The labels file, read and kept in answer order.
#[derive(Debug)]
pub struct Labels {
    path: PathBuf,
    entries: Vec<Label>,
}

impl Labels {
    /// Reads the file; a missing one is empty.
    pub fn load(path: &Path) -> Result<Labels, LabelsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(LabelsError::Read { path: path.to_path_buf(), source }),
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let record = |message: String| LabelsError::Record {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let l: Label =
                serde_json::from_str(line).map_err(|e| record(format!("not a label ({e})")))?;
            if l.skip == l.ranking.is_some() {
                return Err(record("a label has either a `ranking` or `\"skip\": true`".into()));
            }
            entries.push(l);
        }
        Ok(Labels { path: path.to_path_buf(), entries })
    }

    /// The latest answer for `key`.
    pub fn get(&self, key: &str) -> Option<&Label> {
        self.entries.iter().rev().find(|l| l.key == key)
    }

    /// Adds an answer and saves the file.
    pub fn push(&mut self, label: Label) -> Result<(), LabelsError> {
        self.entries.retain(|l| l.key != label.key);
        self.entries.push(label);
        self.save()
    }

    /// Removes the latest answer whose key is in `keys`, saves, and returns it.
    pub fn undo(&mut self, keys: &[String]) -> Result<Option<Label>, LabelsError> {
        let Some(i) = self.entries.iter().rposition(|l| keys.contains(&l.key)) else {
            return Ok(None);
        };
        let l = self.entries.remove(i);
        self.save()?;
        Ok(Some(l))
    }

    /// Temporary file beside it, then rename: readers see the old file or the new one.
    fn save(&self) -> Result<(), LabelsError> {
        let mut text = String::new();
        for l in &self.entries {
            text.push_str(&serde_json::to_string(l).expect("plain data"));
            text.push('\n');
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LabelsError::Write {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        }
        hone_engine::files::write_atomic(&self.path, text.as_bytes())
            .map_err(|e| LabelsError::Write { path: self.path.clone(), message: e.to_string() })
    }
}

/// Parses an order typed by a person for `k` responses numbered from 1: `2 1 4 3`, ties with
/// `=` (`2=1 4 3`). Every response exactly once. Returns groups of indices from 0.
pub fn parse_order(text: &str, k: usize) -> Result<Vec<Vec<usize>>, String> {
    let mut groups = Vec::new();
    let mut seen = vec![false; k];
    for word in text.split_whitespace() {
        let mut group = Vec::new();
        for part in word.split('=') {
            let n: usize = part
                .trim()
                .parse()
                .map_err(|_| format!("`{part}` is not a response number (1 to {k})"))?;
            if n == 0 || n > k {
                return Err(format!(
                    "there is no response {n}: the responses are numbered 1 to {k}"
                ));
            }
            if std::mem::replace(&mut seen[n - 1], true) {
                return Err(format!("response {n} appears twice: give each response once"));
            }
            group.push(n - 1);
        }
        groups.push(group);
    }
    let missing: Vec<String> = (0..k).filter(|&i| !seen[i]).map(|i| (i + 1).to_string()).collect();
    if !missing.is_empty() {
        return Err(format!(
            "response {} missing: rank every response (tie equal ones with `=`, e.g. `2=3`)",
            missing.join(", ")
        ));
    }
    Ok(groups)
}

const HELP: &str = "Type the responses' numbers from best to worst, separated by spaces: `2 1 4 3`.
Tie equally good ones with `=`: `2=1 4 3` (2 and 1 tie for best).
  s  skip this prompt (it gets no ranking)
  u  undo the last answer
  h  this help
  q  quit (every answer is already saved; `hone label` resumes here)";

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Every prompt has an answer.
    Complete,
    /// The person quit (or the input ended) with prompts left.
    Quit { answered: usize, total: usize },
}

/// Asks a person to rank every unanswered prompt of `cands`, saving each answer at once.
pub fn session(
    cands: &[Candidates],
    labels: &mut Labels,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<SessionEnd, LabelsError> {
    let io = LabelsError::Terminal;
    let keys: Vec<String> = cands.iter().map(key).collect();
    let total = cands.len();
    let answered = |labels: &Labels| keys.iter().filter(|k| labels.get(k).is_some()).count();
    writeln!(out, "Ranking {total} prompts ({} answered). `h` for help.", answered(labels))
        .map_err(io)?;
    let mut show = true;
    loop {
        let Some(i) = keys.iter().position(|k| labels.get(k).is_none()) else {
            writeln!(
                out,
                "All {total} prompts are answered; saved in {}. `hone run` goes on from here.",
                labels.path.display()
            )
            .map_err(io)?;
            return Ok(SessionEnd::Complete);
        };
        let c = &cands[i];
        if show {
            writeln!(
                out,
                "\n[{}/{total}] {}",
                answered(labels) + 1,
                indent(&c.prompt.display(), "  ")
            )
            .map_err(io)?;
            for (j, r) in c.responses.iter().enumerate() {
                let shown = if r.is_empty() { "(empty)" } else { r.as_str() };
                writeln!(out, "  {}. {}", j + 1, indent(shown, "     ")).map_err(io)?;
            }
        }
        show = true;
        write!(out, "order (best first), s, u, h, q> ").map_err(io)?;
        out.flush().map_err(io)?;
        let mut line = String::new();
        if input.read_line(&mut line).map_err(io)? == 0 {
            writeln!(out).map_err(io)?;
            return quit(labels, &keys, total, out);
        }
        match line.trim() {
            "q" | "quit" | "exit" => return quit(labels, &keys, total, out),
            "h" | "help" | "?" => {
                writeln!(out, "{HELP}").map_err(io)?;
                show = false;
            }
            "s" | "skip" => {
                labels.push(Label {
                    key: keys[i].clone(),
                    prompt: c.prompt.display().into_owned(),
                    ranking: None,
                    skip: true,
                })?;
                writeln!(out, "skipped").map_err(io)?;
            }
            "u" | "undo" => match labels.undo(&keys)? {
                Some(l) => writeln!(out, "undid your answer to {:?}", l.prompt).map_err(io)?,
                None => {
                    writeln!(out, "nothing to undo").map_err(io)?;
                    show = false;
                }
            },
            "" => show = false,
            text => match parse_order(text, c.responses.len()) {
                Ok(groups) => {
                    labels.push(Label {
                        key: keys[i].clone(),
                        prompt: c.prompt.display().into_owned(),
                        ranking: Some(groups),
                        skip: false,
                    })?;
                    writeln!(out, "saved").map_err(io)?;
                }
                Err(e) => {
                    writeln!(out, "{e}").map_err(io)?;
                    show = false;
                }
            },
        }
    }
}

fn quit(
    labels: &Labels,
    keys: &[String],
    total: usize,
    out: &mut impl Write,
) -> Result<SessionEnd, LabelsError> {
    let answered = keys.iter().filter(|k| labels.get(k).is_some()).count();
    writeln!(
        out,
        "Saved {answered}/{total} answers in {}. Run `hone label` again to go on.",
        labels.path.display()
    )
    .map_err(LabelsError::Terminal)?;
    Ok(SessionEnd::Quit { answered, total })
}

/// Continuation lines of a multi-line text, indented.
fn indent(text: &str, pad: &str) -> String {
    text.replace('\n', &format!("\n{pad}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(n: usize) -> Vec<Candidates> {
        (0..n)
            .map(|i| Candidates {
                prompt: format!("What is {i} plus 1?").into(),
                answer: Some((i + 1).to_string()),
                responses: vec![
                    format!("{i} plus 1 is {}.", i + 1),
                    "No idea.".into(),
                    format!("{i} plus 1 is 7."),
                ],
                tokens: vec![5, 3, 5],
                logprobs: vec![-1.0, -2.0, -3.0],
                finished: vec![true; 3],
            })
            .collect()
    }

    #[test]
    fn orders_ties_and_mistakes() {
        assert_eq!(parse_order("2 1 4 3", 4).unwrap(), vec![vec![1], vec![0], vec![3], vec![2]]);
        assert_eq!(parse_order("2=1 4 3", 4).unwrap(), vec![vec![1, 0], vec![3], vec![2]]);
        assert_eq!(parse_order(" 3=1=2 ", 3).unwrap(), vec![vec![2, 0, 1]]);
        assert!(parse_order("1 2", 3).unwrap_err().contains("response 3 missing"));
        assert!(parse_order("1 2 2 3", 3).unwrap_err().contains("response 2 appears twice"));
        assert!(parse_order("1 2 5", 3).unwrap_err().contains("no response 5"));
        assert!(parse_order("1 two 3", 3).unwrap_err().contains("`two` is not a response number"));
        assert!(parse_order("1= 2 3", 3).is_err());
    }

    #[test]
    fn keys_follow_the_content() {
        let c = cands(2);
        assert_ne!(key(&c[0]), key(&c[1]));
        let mut other = c[0].clone();
        other.logprobs = vec![0.0; 3];
        assert_eq!(key(&c[0]), key(&other), "only the prompt and responses matter");
        other.responses[2] = "changed".into();
        assert_ne!(key(&c[0]), key(&other));
    }

    /// Answers, a skip, a mistake, undo and help; quitting half-way keeps every answer, and
    /// the next session asks only what is left.
    #[test]
    fn a_session_saves_each_answer_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        let c = cands(4);
        let mut labels = Labels::load(&path).unwrap();
        let mut out = Vec::new();
        let typed = "h\n1 3 2\n9 1\ns\nu\n2=1 3\nq\n";
        let end = session(&c, &mut labels, &mut typed.as_bytes(), &mut out).unwrap();
        assert_eq!(end, SessionEnd::Quit { answered: 2, total: 4 });
        let shown = String::from_utf8(out).unwrap();
        assert!(
            shown.contains("[1/4] What is 0 plus 1?") && shown.contains("  2. No idea."),
            "{shown}"
        );
        assert!(shown.contains("[2/4] What is 1 plus 1?"), "{shown}");
        assert!(shown.contains("no response 9"), "{shown}");
        assert!(shown.contains("undid your answer to \"What is 1 plus 1?\""), "{shown}");
        assert!(shown.contains("Tie equally good ones"), "{shown}");
        assert!(shown.contains("Saved 2/4 answers"), "{shown}");
        // On disk, right away.
        let again = Labels::load(&path).unwrap();
        assert_eq!(again.get(&key(&c[0])).unwrap().ranking, Some(vec![vec![0], vec![2], vec![1]]));
        assert_eq!(again.get(&key(&c[1])).unwrap().ranking, Some(vec![vec![1, 0], vec![2]]));
        assert!(again.get(&key(&c[2])).is_none());
        // The next session starts at the third prompt; end of input is a quit.
        let mut labels = again;
        let mut out = Vec::new();
        let end = session(&c, &mut labels, &mut "s\n".as_bytes(), &mut out).unwrap();
        assert_eq!(end, SessionEnd::Quit { answered: 3, total: 4 });
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("[3/4] What is 2 plus 1?") && !shown.contains("[1/4]"), "{shown}");
        let mut out = Vec::new();
        assert_eq!(
            session(&c, &mut labels, &mut "3 2 1\n".as_bytes(), &mut out).unwrap(),
            SessionEnd::Complete
        );
        let l = Labels::load(&path).unwrap();
        assert!(l.get(&key(&c[2])).unwrap().skip);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
    }

    #[test]
    fn a_broken_labels_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        std::fs::write(
            &path,
            "{\"key\":\"a\",\"prompt\":\"p\",\"skip\":true}\n{\"key\":\"b\",\"prompt\":\"p\"}\n",
        )
        .unwrap();
        let err = Labels::load(&path).unwrap_err().to_string();
        assert!(err.contains("labels.jsonl:2: a label has either a `ranking`"), "{err}");
        std::fs::write(&path, "nope\n").unwrap();
        assert!(
            Labels::load(&path).unwrap_err().to_string().contains("labels.jsonl:1: not a label")
        );
    }
}
