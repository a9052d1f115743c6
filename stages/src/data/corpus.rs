//! [`Corpus`]: an `ingest` artifact as the stages after it read it, the one reader of that
//! layout: `train.jsonl` and `val.jsonl` (one normalised record a line, see
//! [`super::formats`]) and `meta.json` ([`CorpusMeta`]: the record format and the counts;
//! [`IngestMeta`]: all of it, with what the run did, as `ingest` writes it and `hone report`
//! reads it).
//!
//! Records stream line by line ([`Corpus::records`]); [`Corpus::chats`] and
//! [`Corpus::prompts`] read a whole split as the typed records of one format. Every problem
//! names the input port, the file and the line, and what to wire instead. A corpus made by
//! another stage (a `command`) may leave `meta.json` out: its records are then checked one by
//! one.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use hone_engine::stage::StageError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::builtin;
use super::filters::FilterStats;
use super::formats::{self, Format, Message, PromptText, Record};

pub const META: &str = "meta.json";

/// One of a corpus's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub const BOTH: [Split; 2] = [Split::Train, Split::Val];

    pub fn file(self) -> &'static str {
        match self {
            Split::Train => "train.jsonl",
            Split::Val => "val.jsonl",
        }
    }
}

/// The fields of `meta.json` that readers rely on; `ingest` writes them first, then its
/// statistics (sources, filters, skipped records), which readers ignore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusMeta {
    /// The format every record has.
    pub format: Format,
    /// Records in `train.jsonl` (a corpus made by hand may leave the counts out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<u64>,
    /// Records in `val.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<u64>,
}

/// `meta.json` whole, as `ingest` writes it: [`CorpusMeta`], then what the run did. A corpus
/// made by another stage may have only the [`CorpusMeta`] fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestMeta {
    #[serde(flatten)]
    pub corpus: CorpusMeta,
    pub val_fraction: f64,
    /// Records read, before the filters.
    pub records: u64,
    /// Records with no text, left out.
    pub empty: u64,
    /// Malformed records skipped (`on_error: skip`).
    pub skipped: u64,
    /// The first few of them: where, and why.
    pub skipped_examples: Vec<String>,
    /// Preference pairs left out as unusable (an empty or repeated response).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unusable: u64,
    pub sources: Vec<SourceCount>,
    /// What each filter of the chain did, in chain order.
    pub filters: Vec<FilterStats>,
}

/// How many records one source gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCount {
    pub source: String,
    pub records: u64,
}

impl IngestMeta {
    /// The `meta.json` in `dir`, if it is one `ingest` wrote.
    pub fn read(dir: &Path) -> Option<IngestMeta> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(META)).ok()?).ok()
    }
}

/// A corpus artifact, opened: its files exist and its `meta.json` (if any) is read.
#[derive(Debug)]
pub struct Corpus {
    dir: PathBuf,
    /// The input port it is wired to, for messages.
    port: String,
    pub meta: Option<CorpusMeta>,
}

/// A prompt record and where it is (`input `prompts` val.jsonl:3`).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRecord {
    pub at: String,
    pub prompt: PromptText,
    /// The reference answer, kept as given (string, number or boolean).
    pub answer: Option<Value>,
}

/// A conversation and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRecord {
    pub at: String,
    pub messages: Vec<Message>,
}

impl Corpus {
    /// Opens the corpus wired to input `port` (its artifact directory `dir`).
    pub fn open(dir: &Path, port: &str) -> Result<Corpus, StageError> {
        for split in Split::BOTH {
            if !dir.join(split.file()).is_file() {
                return Err(StageError::msg(format!(
                    "input `{port}` is not a corpus: it has no `{}` (looked in {}); wire `{port}` to an `ingest` stage",
                    split.file(),
                    dir.display()
                )));
            }
        }
        let path = dir.join(META);
        let meta = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StageError::Io { context: format!("input `{port}`: cannot read `{}`", path.display()), source: e }),
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| {
                StageError::msg(format!("input `{port}`: `{}` is not a corpus's meta.json ({e}); re-run the ingest stage that made it", path.display()))
            })?),
        };
        Ok(Corpus { dir: dir.to_path_buf(), port: port.to_string(), meta })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number of records in `split`, when `meta.json` says.
    pub fn count(&self, split: Split) -> Option<u64> {
        self.meta.as_ref().and_then(|m| match split {
            Split::Train => m.train,
            Split::Val => m.val,
        })
    }

    /// Fails unless the corpus holds `format` records (as far as `meta.json` says; records
    /// are checked as they are read). `stage` names the reader in the message.
    pub fn expect(&self, format: Format, stage: &str) -> Result<(), StageError> {
        match &self.meta {
            Some(m) if m.format != format => Err(StageError::msg(format!(
                "input `{}` is a {} corpus, but {stage} needs {}\n   = help: {}",
                self.port,
                m.format.name(),
                describe(format),
                wire_help(&self.port, format)
            ))),
            _ => Ok(()),
        }
    }

    /// The records of `split`, streamed, with their line numbers.
    pub fn records(&self, split: Split) -> Result<Records, StageError> {
        let path = self.dir.join(split.file());
        let file = File::open(&path).map_err(StageError::io(format!(
            "input `{}`: cannot open `{}`",
            self.port,
            path.display()
        )))?;
        Ok(Records {
            reader: BufReader::new(file),
            port: self.port.clone(),
            file: split.file(),
            line_no: 0,
            line: String::new(),
            read: 0,
        })
    }

    /// Every record of `split`, which must all be of `format`: `take` turns each into what
    /// the caller keeps (`None` for a record of another format).
    fn typed<T>(
        &self,
        split: Split,
        format: Format,
        stage: &str,
        mut take: impl FnMut(String, Record) -> Option<T>,
    ) -> Result<Vec<T>, StageError> {
        self.expect(format, stage)?;
        let mut out = Vec::new();
        for item in self.records(split)? {
            let (line, record) = item?;
            let at = format!("input `{}` {}:{line}", self.port, split.file());
            let found = record.format();
            match take(at.clone(), record) {
                Some(t) => out.push(t),
                None => {
                    return Err(StageError::msg(format!(
                        "{at}: a {} record, but {stage} needs {}\n   = help: {}",
                        found.name(),
                        describe(format),
                        wire_help(&self.port, format)
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The conversations of `split` (a chat corpus).
    pub fn chats(&self, split: Split, stage: &str) -> Result<Vec<ChatRecord>, StageError> {
        self.typed(split, Format::Chat, stage, |at, r| match r {
            Record::Chat { messages, .. } => Some(ChatRecord { at, messages }),
            _ => None,
        })
    }

    /// The prompt records of `split` (a prompt corpus).
    pub fn prompts(&self, split: Split, stage: &str) -> Result<Vec<PromptRecord>, StageError> {
        self.typed(split, Format::Prompt, stage, |at, r| match r {
            Record::Prompt { prompt, answer, .. } => Some(PromptRecord { at, prompt, answer }),
            _ => None,
        })
    }
}

/// What a corpus of `format` holds, for messages.
fn describe(format: Format) -> &'static str {
    match format {
        Format::Text => "text records (`{\"text\"}`)",
        Format::Chat => "conversations (a chat corpus: `messages`, or `prompt` with `completion`)",
        Format::Prompt => "prompt records (`{\"prompt\", \"answer\"?}`)",
        Format::Preference => "preference records (`{\"prompt\", \"chosen\", \"rejected\"}`)",
    }
}

fn wire_help(port: &str, format: Format) -> String {
    let example = builtin::BUILTINS
        .iter()
        .find(|b| b.format == format)
        .map(|b| format!(", e.g. `source: builtin:{}`", b.name))
        .unwrap_or_default();
    format!(
        "wire `{port}` to an `ingest` stage of {} records (`format: {}`){example}",
        format.name(),
        format.name()
    )
}

/// The records of one file of a corpus: `(line number, record)`, blank lines skipped.
pub struct Records {
    reader: BufReader<File>,
    port: String,
    file: &'static str,
    line_no: usize,
    line: String,
    /// Records read so far.
    pub read: u64,
}

impl Iterator for Records {
    type Item = Result<(usize, Record), StageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line.clear();
            match self.reader.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(StageError::Io {
                        context: format!("input `{}`: cannot read `{}`", self.port, self.file),
                        source: e,
                    }));
                }
            }
            self.line_no += 1;
            let line = self.line.trim();
            if line.is_empty() {
                continue;
            }
            return Some(match formats::parse_json(line) {
                Ok(r) => {
                    self.read += 1;
                    Ok((self.line_no, r))
                }
                Err(what) => Err(StageError::msg(format!(
                    "input `{}` {}:{}: {what}; a corpus should come from an `ingest` stage",
                    self.port, self.file, self.line_no
                ))),
            });
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(train: &str, val: &str, meta: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.jsonl"), train).unwrap();
        std::fs::write(dir.path().join("val.jsonl"), val).unwrap();
        if let Some(m) = meta {
            std::fs::write(dir.path().join(META), m).unwrap();
        }
        dir
    }

    #[test]
    fn reads_prompts_and_chats_with_their_lines() {
        let d = corpus(
            "{\"prompt\": \"2+2?\", \"answer\": 4}\n\n{\"prompt\": \"hi\"}\n",
            "{\"prompt\": \"x\"}\n",
            Some("{\"format\": \"prompt\", \"train\": 2, \"val\": 1, \"sources\": []}"),
        );
        let c = Corpus::open(d.path(), "prompts").unwrap();
        assert_eq!(c.count(Split::Train), Some(2));
        let p = c.prompts(Split::Train, "evaluate").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].answer, Some(serde_json::json!(4)));
        assert_eq!(p[1].at, "input `prompts` train.jsonl:3");
        let e = c.chats(Split::Train, "sft").unwrap_err().to_string();
        assert!(
            e.contains("input `prompts` is a prompt corpus, but sft needs conversations"),
            "{e}"
        );
        assert!(e.contains("builtin:tinyworld/chat"), "{e}");
    }

    #[test]
    fn without_meta_every_record_is_checked() {
        let d = corpus(
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n{\"text\": \"t\"}\n",
            "",
            None,
        );
        let c = Corpus::open(d.path(), "data").unwrap();
        assert_eq!(c.count(Split::Train), None);
        let e = c.chats(Split::Train, "sft").unwrap_err().to_string();
        assert!(
            e.starts_with("input `data` train.jsonl:2: a text record, but sft needs conversations"),
            "{e}"
        );
        assert_eq!(c.chats(Split::Val, "sft").unwrap(), vec![]);
    }

    #[test]
    fn bad_corpora_are_explained() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("train.jsonl"), "{\"text\": \"a\"}\nnot json\n").unwrap();
        let e = Corpus::open(d.path(), "corpus").unwrap_err().to_string();
        assert!(
            e.contains("input `corpus` is not a corpus: it has no `val.jsonl`")
                && e.contains("ingest"),
            "{e}"
        );
        std::fs::write(d.path().join("val.jsonl"), "").unwrap();
        std::fs::write(d.path().join(META), "[1]").unwrap();
        let e = Corpus::open(d.path(), "corpus").unwrap_err().to_string();
        assert!(e.contains("is not a corpus's meta.json"), "{e}");
        std::fs::remove_file(d.path().join(META)).unwrap();
        let c = Corpus::open(d.path(), "corpus").unwrap();
        let all: Vec<_> = c.records(Split::Train).unwrap().collect();
        assert!(all[0].is_ok());
        let e = all[1].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("input `corpus` train.jsonl:2: invalid JSON"), "{e}");
    }
}
