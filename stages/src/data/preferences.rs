//! Preference files: rankings or preference pairs from JSONL (plain, or gzip/zstd by the name's
//! `.gz`/`.zst`, as `ingest` reads them), as the `rank` stage's `file` labeler reads them
//! ([`read`]). Each line is one of:
//!
//! - a **ranking**, hone's own form ([`crate::data::rankings`]):
//!   `{"prompt", "responses", "ranking"}`;
//! - **TRL, explicit prompt**: `{"prompt": "...", "chosen": "...", "rejected": "..."}`;
//! - **Anthropic HH**: `{"chosen": "\n\nHuman: ...\n\nAssistant: ...", "rejected": "..."}`,
//!   two transcripts that share every turn but the last assistant one. The prompt is the
//!   transcript before the last `\n\nAssistant:`: for one exchange, the human's message; for
//!   several, the earlier turns as the transcript writes them (`Human: ...\n\nAssistant:
//!   ...\n\nHuman: ...`). The responses are the two last assistant turns;
//! - **TRL, implicit prompt**: `{"chosen": "...", "rejected": "..."}`, the prompt being their
//!   common beginning, split as TRL's `extract_prompt` splits it (at the first differing
//!   character, less a space just before it).
//!
//! With `format: auto` each line's form is told by its fields (and HH by its `\n\nHuman:`
//! start). A pair becomes `responses: [chosen, rejected], ranking: [[0], [1]]`; texts are
//! trimmed.
//!
//! **Quirks of real files** are skipped, never fatal, each with a reason counted in
//! [`Read::skipped`] (the stage puts the counts and a few examples in `meta.json`): a line
//! that is not JSON or not one of the forms; an empty response; identical responses (nothing
//! to prefer); HH transcripts that already differ before the last assistant turn (TRL would
//! take their common prefix as the prompt and train on two different conversations); an HH
//! transcript without an assistant turn; an implicit pair with no common beginning;
//! conversational records (lists of messages), which hone's single-string prompts do not hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rankings::{self, Ranking};

/// Which form the lines are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Told per line by its fields.
    #[default]
    Auto,
    Rankings,
    /// `prompt`/`chosen`/`rejected`.
    Trl,
    /// `chosen`/`rejected` sharing a prompt prefix.
    Implicit,
    /// Anthropic HH transcripts.
    Hh,
}

/// Skip reasons, as they appear in `meta.json`.
pub const NOT_JSON: &str = "not JSON";
pub const UNKNOWN: &str = "not a ranking or a preference pair";
pub const EMPTY: &str = "empty response";
pub const IDENTICAL: &str = "identical responses";
pub const HH_DIFFER: &str = "transcripts differ before the last assistant turn";
pub const HH_NO_ASSISTANT: &str = "no assistant turn";
pub const NO_PROMPT: &str = "no common prompt";
pub const CONVERSATIONAL: &str = "conversational (message list) record";
pub const BAD_RANKING: &str = "invalid ranking";

/// A line left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    /// From 1.
    pub line: usize,
    pub reason: &'static str,
    /// What exactly (for the examples in `meta.json`).
    pub detail: String,
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Read {
    pub rankings: Vec<Ranking>,
    pub skipped: Vec<Skip>,
    /// Lines read per form (`rankings`, `trl`, `hh`, `implicit`).
    pub forms: BTreeMap<&'static str, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreferencesError {
    #[error("cannot read `{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Reads a preference file (see the module doc), compressed with gzip or zstd when its name
/// ends in `.gz` or `.zst`, as `ingest` reads them.
pub fn read(path: &Path, format: Format) -> Result<Read, PreferencesError> {
    use std::io::Read as _;
    let (_, compression) = crate::data::formats::compression_of(path);
    let mut text = String::new();
    crate::data::formats::open(path, compression, Default::default())
        .and_then(|mut r| r.read_to_string(&mut text))
        .map_err(|source| PreferencesError::Io { path: path.to_path_buf(), source })?;
    Ok(parse(&text, format))
}

/// [`read`] on text.
pub fn parse(text: &str, format: Format) -> Read {
    let mut out = Read::default();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = i + 1;
        let skip = |reason: &'static str, detail: String| Skip { line: line_no, reason, detail };
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                out.skipped.push(skip(NOT_JSON, e.to_string()));
                continue;
            }
        };
        let form = match format {
            Format::Auto => detect(&v),
            f => Some(f),
        };
        let result = match form {
            Some(Format::Rankings) => rankings::parse_line(line).map_err(|e| (BAD_RANKING, e)),
            Some(Format::Trl) => trl(&v),
            Some(Format::Hh) => hh(&v),
            Some(Format::Implicit) => implicit(&v),
            Some(Format::Auto) | None => Err((UNKNOWN, "expected `prompt`/`chosen`/`rejected`, `chosen`/`rejected`, or `prompt`/`responses`/`ranking`".to_string())),
        };
        match result {
            Ok(r) => {
                *out.forms.entry(form_name(form.expect("parsed"))).or_default() += 1;
                out.rankings.push(r);
            }
            Err((reason, detail)) => out.skipped.push(skip(reason, detail)),
        }
    }
    out
}

fn form_name(f: Format) -> &'static str {
    match f {
        Format::Auto => "auto",
        Format::Rankings => "rankings",
        Format::Trl => "trl",
        Format::Implicit => "implicit",
        Format::Hh => "hh",
    }
}

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

fn detect(v: &Value) -> Option<Format> {
    let has = |k: &str| v.get(k).is_some();
    if has("ranking") {
        Some(Format::Rankings)
    } else if has("chosen") && has("rejected") {
        if has("prompt") {
            Some(Format::Trl)
        } else if v["chosen"]
            .as_str()
            .is_some_and(|c| c.starts_with(HUMAN) || c.starts_with(HUMAN.trim_start()))
        {
            Some(Format::Hh)
        } else {
            Some(Format::Implicit)
        }
    } else {
        None
    }
}

type Parsed = Result<Ranking, (&'static str, String)>;

/// A string field, or the reason to skip.
fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, (&'static str, String)> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(_)) => {
            Err((CONVERSATIONAL, format!("`{key}` is a list of messages; hone reads text fields")))
        }
        Some(other) => Err((UNKNOWN, format!("`{key}` is {other}, not text"))),
        None => Err((UNKNOWN, format!("no `{key}` field"))),
    }
}

/// A pair, unless a response is empty or both are the same.
fn pair(prompt: &str, chosen: &str, rejected: &str) -> Parsed {
    let (c, r) = (chosen.trim(), rejected.trim());
    if c.is_empty() || r.is_empty() {
        let which = if c.is_empty() { "chosen" } else { "rejected" };
        return Err((EMPTY, format!("the {which} response is empty (prompt {:?})", clip(prompt))));
    }
    if c == r {
        return Err((IDENTICAL, format!("chosen and rejected are both {:?}", clip(c))));
    }
    Ok(Ranking::preference(prompt.trim(), c, r))
}

fn trl(v: &Value) -> Parsed {
    pair(text(v, "prompt")?, text(v, "chosen")?, text(v, "rejected")?)
}

/// TRL's `extract_prompt` for text: the prompt is the common beginning, cut at the first
/// differing character, one earlier if the character before it is a space.
fn implicit(v: &Value) -> Parsed {
    let (c, r) = (text(v, "chosen")?, text(v, "rejected")?);
    if c.trim() == r.trim() {
        return pair("", c, r);
    }
    let mut cut = c
        .char_indices()
        .zip(r.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(c.len().min(r.len()));
    if c[..cut].ends_with(' ') {
        cut -= 1;
    }
    let prompt = &c[..cut];
    if prompt.trim().is_empty() {
        return Err((
            NO_PROMPT,
            format!("chosen {:?} and rejected {:?} share no beginning", clip(c), clip(r)),
        ));
    }
    pair(prompt, &c[cut..], &r[cut..])
}

/// An Anthropic HH pair (see the module doc).
fn hh(v: &Value) -> Parsed {
    let (c, r) = (text(v, "chosen")?, text(v, "rejected")?);
    let split = |t: &str| {
        t.rfind(ASSISTANT).map(|i| (t[..i].to_string(), t[i + ASSISTANT.len()..].to_string()))
    };
    let (Some((pc, rc)), Some((pr, rr))) = (split(c), split(r)) else {
        return Err((
            HH_NO_ASSISTANT,
            format!(
                "a transcript has no `\\n\\nAssistant:` turn: {:?}",
                clip(if split(c).is_none() { c } else { r })
            ),
        ));
    };
    if pc != pr {
        return Err((
            HH_DIFFER,
            format!(
                "the conversations before the last answer differ: {:?} vs {:?}",
                clip(&pc),
                clip(&pr)
            ),
        ));
    }
    let body =
        pc.strip_prefix(HUMAN).or_else(|| pc.strip_prefix(HUMAN.trim_start())).unwrap_or(&pc);
    let prompt = if body.contains(ASSISTANT) {
        // Several exchanges: the transcript, without its leading blank lines.
        pc.trim_start().to_string()
    } else {
        body.trim().to_string()
    };
    pair(&prompt, &rc, &rr)
}

/// The first 80 characters.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Ranking {
        let r = parse(line, Format::Auto);
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(r.rankings.len(), 1);
        r.rankings.into_iter().next().unwrap()
    }

    fn skipped(line: &str) -> Skip {
        let r = parse(line, Format::Auto);
        assert!(r.rankings.is_empty(), "{:?}", r.rankings);
        r.skipped.into_iter().next().unwrap()
    }

    #[test]
    fn trl_explicit_prompt() {
        let r =
            one(r#"{"prompt": "What is 2 plus 2?", "chosen": " 2 plus 2 is 4.", "rejected": "5"}"#);
        assert_eq!(r, Ranking::preference("What is 2 plus 2?", "2 plus 2 is 4.", "5"));
    }

    #[test]
    fn trl_implicit_prompt_is_split_as_trl_splits_it() {
        // The common beginning is "The sky is " ... less the space before the first difference.
        let r = one(r#"{"chosen": "The sky is blue.", "rejected": "The sky is green."}"#);
        assert_eq!(r, Ranking::preference("The sky is", "blue.", "green."));
        // Multi-byte characters are never cut.
        let r = one(r#"{"chosen": "Café: oui", "rejected": "Café: non"}"#);
        assert_eq!(r, Ranking::preference("Café:", "oui", "non"));
        // One a prefix of the other: the prompt is the shorter, the shorter's response empty.
        assert_eq!(skipped(r#"{"chosen": "Hello there", "rejected": "Hello"}"#).reason, EMPTY);
        assert_eq!(skipped(r#"{"chosen": "Yes.", "rejected": "No."}"#).reason, NO_PROMPT);
    }

    #[test]
    fn anthropic_hh_single_and_multi_turn() {
        let r = one(
            r#"{"chosen": "\n\nHuman: What colour is the sky?\n\nAssistant: It is blue.", "rejected": "\n\nHuman: What colour is the sky?\n\nAssistant: Go away."}"#,
        );
        assert_eq!(r, Ranking::preference("What colour is the sky?", "It is blue.", "Go away."));
        let multi = r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: And 2 plus 2?\n\nAssistant: 4.", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: And 2 plus 2?\n\nAssistant: 5."}"#;
        let r = one(multi);
        assert_eq!(r.prompt, "Human: Hi\n\nAssistant: Hello!\n\nHuman: And 2 plus 2?");
        assert_eq!(r.responses, vec!["4.", "5."]);
    }

    #[test]
    fn each_quirk_is_skipped_with_its_reason() {
        let cases = [
            // HH transcripts that differ before the last assistant turn.
            (
                r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Bye!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: Bye\n\nAssistant: Bye!"}"#,
                HH_DIFFER,
            ),
            (
                r#"{"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}"#,
                HH_NO_ASSISTANT,
            ),
            // Empty and identical answers, in each form.
            (
                r#"{"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}"#,
                EMPTY,
            ),
            (
                r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}"#,
                IDENTICAL,
            ),
            (r#"{"prompt": "Hi", "chosen": "", "rejected": "Hello"}"#, EMPTY),
            (r#"{"prompt": "Hi", "chosen": "Hello", "rejected": " Hello "}"#, IDENTICAL),
            (r#"{"chosen": "Same text", "rejected": "Same text"}"#, IDENTICAL),
            (
                r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go"}]}"#,
                CONVERSATIONAL,
            ),
            (r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [[0]]}"#, BAD_RANKING),
            (r#"{"text": "hello"}"#, UNKNOWN),
            (r#"{"prompt": "Hi", "chosen": 3, "rejected": "Hello"}"#, UNKNOWN),
            ("{not json", NOT_JSON),
        ];
        for (line, reason) in cases {
            let s = skipped(line);
            assert_eq!(s.reason, reason, "{line}: {s:?}");
            assert_eq!(s.line, 1);
            assert!(!s.detail.is_empty());
        }
    }

    #[test]
    fn a_mixed_file_keeps_the_good_lines_and_counts_the_rest() {
        let text = [
            r#"{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [[2], [0, 1]]}"#,
            "",
            r#"{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}"#,
            r#"{"prompt": "Hi", "chosen": "Hello", "rejected": "Hello"}"#,
            r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go"}"#,
            "oops",
        ]
        .join("\n");
        let r = parse(&text, Format::Auto);
        assert_eq!(r.rankings.len(), 3);
        assert_eq!(r.rankings[0].ranking, vec![vec![2], vec![0, 1]]);
        assert_eq!(
            r.skipped.iter().map(|s| (s.line, s.reason)).collect::<Vec<_>>(),
            vec![(4, IDENTICAL), (6, NOT_JSON)]
        );
        assert_eq!(r.forms, BTreeMap::from([("rankings", 1), ("trl", 1), ("hh", 1)]));
        // A forced format reads every line as that form.
        let forced =
            parse(r#"{"prompt": "x", "chosen": "x a", "rejected": "x b"}"#, Format::Implicit);
        assert_eq!(forced.rankings, vec![Ranking::preference("x", "a", "b")]);
    }

    /// `.gz` and `.zst` files read as the plain file does; a missing file names itself.
    #[test]
    fn compressed_files_read_as_plain_ones() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let body = concat!(
            r#"{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}"#,
            "\n",
            r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [[1], [0]]}"#,
            "\n"
        );
        let plain = dir.path().join("prefs.jsonl");
        std::fs::write(&plain, body).unwrap();
        let gz = dir.path().join("prefs.jsonl.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body.as_bytes()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let zst = dir.path().join("prefs.jsonl.zst");
        std::fs::write(&zst, zstd::encode_all(body.as_bytes(), 3).unwrap()).unwrap();
        let want = read(&plain, Format::Auto).unwrap();
        assert_eq!(want.rankings.len(), 2);
        for f in [&gz, &zst] {
            assert_eq!(read(f, Format::Auto).unwrap().rankings, want.rankings, "{}", f.display());
        }
        let e = read(&dir.path().join("none.jsonl.gz"), Format::Auto).unwrap_err().to_string();
        assert!(e.contains("none.jsonl.gz"), "{e}");
    }
}
