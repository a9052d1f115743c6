//! Preference data as the `rank` stage's `file` labeler reads it: any source `ingest` reads
//! (JSONL with or without `.gz`/`.zst`, Parquet, HF `datasets` folders, globs; see
//! [`super::sources`]), or an `ingest` stage's preference corpus ([`Read::add_corpus`]), through the same reader
//! ([`super::formats::from_value`]). A record is either
//!
//! - a **ranking**, hone's own form ([`crate::data::rankings`]):
//!   `{"prompt", "responses", "ranking"}`; or
//! - a **preference pair** in any form the reader knows: TRL's explicit or implicit prompt,
//!   as strings or message lists; Anthropic HH transcripts. It becomes `responses: [chosen,
//!   rejected], ranking: [[0], [1]]`.
//!
//! **Quirks of real files** are skipped, never fatal, each with a reason counted in
//! [`Read::skipped`] (the stage puts the counts and a few examples in `meta.json`): what the
//! reader cannot parse ([`super::formats::NOT_JSON`], [`super::formats::MALFORMED`], …), an empty or
//! repeated response, conversations that differ before their last answer, a record that is
//! neither a ranking nor a pair, an invalid ranking.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hone_engine::stage::StageError;
use serde_json::{Value, json};

use super::corpus::{Corpus, Split};
use super::formats::{Bad, Format, Record};
use super::rankings::Ranking;
use super::sources::{self, Input, ReadOptions};

/// Skip reasons beside the reader's own.
pub const NOT_PAIR: &str = "not a ranking or a preference pair";
pub const BAD_RANKING: &str = "invalid ranking";

/// A record left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    /// `file:line`, `file: row group 0, row 12`.
    pub at: String,
    pub reason: &'static str,
    /// What exactly (for the examples in `meta.json`).
    pub detail: String,
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Read {
    pub rankings: Vec<Ranking>,
    pub skipped: Vec<Skip>,
    /// Records read per form (`rankings`, `pairs`).
    pub forms: BTreeMap<&'static str, usize>,
}

impl Read {
    /// Keeps a record's ranking, or why it was left out (`at`: where it is).
    fn take(&mut self, at: impl FnOnce() -> String, item: Result<Record, Bad>) {
        match item.and_then(ranking) {
            Ok((form, r)) => {
                *self.forms.entry(form).or_default() += 1;
                self.rankings.push(r);
            }
            Err(bad) => {
                self.skipped.push(Skip { at: at(), reason: bad.reason, detail: bad.detail })
            }
        }
    }

    /// Adds the pairs of an `ingest` preference corpus wired to input `port` (both splits),
    /// read with [`Corpus`]: its records are normalised already.
    pub fn add_corpus(&mut self, dir: &Path, port: &str) -> Result<(), StageError> {
        let corpus = Corpus::open(dir, port)?;
        corpus.expect(Format::Preference, "`rank` with `labeler: file`")?;
        for split in Split::BOTH {
            for item in corpus.records(split)? {
                let (line, record) = item?;
                self.take(|| format!("input `{port}` {}:{line}", split.file()), Ok(record));
            }
        }
        Ok(())
    }
}

/// Reads every source in order.
pub fn read(inputs: &[Input], opts: ReadOptions) -> Result<Read, StageError> {
    let mut out = Read::default();
    for input in inputs {
        let shown = input.shown();
        sources::each_record(input, opts, Arc::new(AtomicU64::new(0)), &mut |at, item| {
            out.take(|| at.show(&shown), item);
            Ok(())
        })?;
    }
    Ok(out)
}

/// A record as a ranking, and its form.
pub fn ranking(record: Record) -> Result<(&'static str, Ranking), Bad> {
    match record {
        Record::Preference { prompt, chosen, rejected, .. } => {
            Ok(("pairs", Ranking::preference(prompt, chosen, rejected)))
        }
        // hone's rankings read as prompt records whose other fields are kept as meta.
        Record::Prompt { prompt, meta: Some(mut meta), .. }
            if meta.contains_key("responses") && meta.contains_key("ranking") =>
        {
            let v = json!({
                "prompt": prompt,
                "responses": meta.remove("responses").unwrap_or(Value::Null),
                "ranking": meta.remove("ranking").unwrap_or(Value::Null),
            });
            let r: Ranking = serde_json::from_value(v)
                .map_err(|e| Bad::new(BAD_RANKING, format!("not a ranking: {e}")))?;
            r.check().map_err(|e| Bad::new(BAD_RANKING, e))?;
            Ok(("rankings", r))
        }
        other => Err(Bad::new(
            NOT_PAIR,
            format!(
                "a {} record; expected `prompt`/`chosen`/`rejected`, `chosen`/`rejected`, or `prompt`/`responses`/`ranking`",
                other.format().name()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::columnar::{Columns, write};
    use crate::data::formats::{self, TxtSplit};
    use std::path::Path;

    fn read_files(dir: &Path, sources: &[&str]) -> Read {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let inputs = sources::resolve(&sources, &[], dir).unwrap();
        let columns = Columns::default();
        read(&inputs, ReadOptions { txt_split: TxtSplit::BlankLine, columns: &columns, seed: 1 })
            .unwrap()
    }

    #[test]
    fn a_mixed_file_keeps_the_good_records_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let text = [
            r#"{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [[2], [0, 1]]}"#,
            "",
            r#"{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}"#,
            r#"{"prompt": "Hi", "chosen": "Hello", "rejected": "Hello"}"#,
            r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go"}"#,
            "oops",
            r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go"}]}"#,
            r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [[0]]}"#,
            r#"{"text": "hello"}"#,
        ]
        .join("\n");
        std::fs::write(dir.path().join("p.jsonl"), text).unwrap();
        let r = read_files(dir.path(), &["p.jsonl"]);
        assert_eq!(r.rankings.len(), 4);
        assert_eq!(r.rankings[0].ranking, vec![vec![2], vec![0, 1]]);
        assert_eq!(r.rankings[3], Ranking::preference("Hi", "Hello", "Go"), "conversational");
        assert_eq!(
            r.skipped.iter().map(|s| (s.at.as_str(), s.reason)).collect::<Vec<_>>(),
            vec![
                ("p.jsonl:4", formats::IDENTICAL),
                ("p.jsonl:6", formats::NOT_JSON),
                ("p.jsonl:8", BAD_RANKING),
                ("p.jsonl:9", NOT_PAIR),
            ]
        );
        assert_eq!(r.forms, BTreeMap::from([("rankings", 1), ("pairs", 3)]));
    }

    /// `.gz`, `.zst` and Parquet read as the plain file does; a missing file names itself.
    #[test]
    fn compressed_and_parquet_files_read_as_plain_ones() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let body = concat!(
            r#"{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}"#,
            "\n",
            r#"{"prompt": "2+2?", "chosen": "4", "rejected": "5"}"#,
            "\n"
        );
        std::fs::write(dir.path().join("prefs.jsonl"), body).unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body.as_bytes()).unwrap();
        std::fs::write(dir.path().join("prefs.jsonl.gz"), e.finish().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("prefs.jsonl.zst"),
            zstd::encode_all(body.as_bytes(), 3).unwrap(),
        )
        .unwrap();
        write::parquet(
            &dir.path().join("prefs.parquet"),
            &[write::batch(vec![
                ("prompt", write::strings(&["Hi", "2+2?"])),
                ("chosen", write::strings(&["Hello", "4"])),
                ("rejected", write::strings(&["Go", "5"])),
            ])],
            100,
        );
        let want = read_files(dir.path(), &["prefs.jsonl"]);
        assert_eq!(want.rankings.len(), 2);
        for f in ["prefs.jsonl.gz", "prefs.jsonl.zst", "prefs.parquet"] {
            assert_eq!(read_files(dir.path(), &[f]).rankings, want.rankings, "{f}");
        }
        let e = sources::resolve(&["none.jsonl.gz".into()], &[], dir.path()).unwrap_err();
        assert!(e.contains("none.jsonl.gz"), "{e}");
    }
}
