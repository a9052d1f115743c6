//! Normalising records into hone's four corpus formats: the one reader of chat and preference
//! records, for `ingest` and `rank`'s `file` labeler alike ([`from_value`]), and the line
//! reader of `.txt` and `.jsonl` files ([`RecordReader`]; Parquet and Arrow rows come from
//! [`super::columnar`] as JSON objects and go through [`from_value`] too).
//!
//! Files: `.txt` (one document per file, or per block of lines separated by blank lines)
//! and `.jsonl` (one JSON object per line), each optionally compressed as `.gz` or `.zst`.
//! They are read as streams, line by line, so memory does not grow with the file.
//!
//! Records ([`Record`]) and the input fields each comes from, following the Python
//! ecosystem's conventions (HF datasets, TRL, OpenAI, Anthropic HH):
//!
//! | format       | input fields                                                     | written as |
//! |--------------|------------------------------------------------------------------|------------|
//! | `text`       | `text`; every document of a `.txt` file                           | `{"text"}` |
//! | `chat`       | `messages: [{role, content}]` (OpenAI); or `prompt` + `completion` (TRL, strings or lists of messages) | `{"messages"}` |
//! | `prompt`     | `prompt` (a string or a list of messages: TRL's prompt-only forms), optional `answer` | `{"prompt", "answer"?}` |
//! | `preference` | `prompt` + `chosen` + `rejected` (TRL's explicit prompt; strings or lists of messages); `chosen` + `rejected` alone (implicit prompt: strings split as TRL's `extract_prompt` does, or conversations whose earlier turns are the prompt); Anthropic HH: `chosen`/`rejected` as whole `\n\nHuman: … \n\nAssistant: …` transcripts | `{"prompt", "chosen", "rejected"}` |
//!
//! A record's format is read from its fields, in this order: `messages` → chat;
//! `chosen`/`rejected` → preference; `completion` → chat; `text` → text; `prompt` → prompt.
//! Other fields are kept under `"meta"` (merged with a `meta` object the record may have).
//!
//! A prompt ([`PromptText`]) is a string when it is one user message, and otherwise a
//! conversation ending in the user's turn (earlier turns of a conversational record, or of a
//! multi-turn HH transcript), which `sample`, `rank`, `reward`, `ppo`, `grpo` and `evaluate`
//! pass to the model whole. Responses are trimmed. What is wrong with a record is a [`Bad`]:
//! a reason (counted by `rank`) and the details.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The shape of a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Chat,
    Prompt,
    Preference,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Chat => "chat",
            Format::Prompt => "prompt",
            Format::Preference => "preference",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message { role: Role::User, content: content.into() }
    }
}

/// What a model is asked: one user message (a string, as most data has it), or a
/// conversation whose last turn is the user's (TRL's conversational prompts, multi-turn
/// Anthropic HH), which a chat model answers with all its turns in context. Written as it is
/// read: a string, or a list of `{role, content}`, so single-turn data keeps its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptText {
    Text(String),
    Turns(Vec<Message>),
}

impl PromptText {
    /// A conversation's turns as a prompt: one user turn is its text; otherwise the last turn
    /// must be the user's. Contents are trimmed.
    pub fn from_turns(mut turns: Vec<Message>, field: &str) -> Result<PromptText, String> {
        for t in &mut turns {
            let trimmed = t.content.trim();
            if trimmed.len() != t.content.len() {
                t.content = trimmed.to_string();
            }
        }
        match turns.as_slice() {
            [] => Err(format!("`{field}` has no turns")),
            [Message { role: Role::User, .. }] => {
                Ok(PromptText::Text(turns.pop().expect("one").content))
            }
            [.., Message { role: Role::User, .. }] => Ok(PromptText::Turns(turns)),
            _ => Err(format!(
                "the last turn of `{field}` must be the user's: a prompt is what the model answers"
            )),
        }
    }

    /// The conversation the model continues: the turns, or one user message.
    pub fn messages(&self) -> Vec<Message> {
        match self {
            PromptText::Text(t) => vec![Message::user(t.clone())],
            PromptText::Turns(m) => m.clone(),
        }
    }

    /// The text, or the turns as a transcript (`Human: …\n\nAssistant: …\n\nHuman: …`), for
    /// people, filters and programs that read one string.
    pub fn display(&self) -> Cow<'_, str> {
        match self {
            PromptText::Text(t) => Cow::Borrowed(t),
            PromptText::Turns(m) => Cow::Owned(
                m.iter()
                    .map(|t| {
                        let who = match t.role {
                            Role::System => "System",
                            Role::User => "Human",
                            Role::Assistant => "Assistant",
                        };
                        format!("{who}: {}", t.content)
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
        }
    }

    /// Bytes of text.
    pub fn len(&self) -> usize {
        match self {
            PromptText::Text(t) => t.len(),
            PromptText::Turns(m) => m.iter().map(|t| t.content.len()).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each turn's text (a tokenizer's documents).
    pub fn into_texts(self) -> Vec<String> {
        match self {
            PromptText::Text(t) => vec![t],
            PromptText::Turns(m) => m.into_iter().map(|t| t.content).collect(),
        }
    }
}

impl std::fmt::Display for PromptText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl From<&str> for PromptText {
    fn from(t: &str) -> PromptText {
        PromptText::Text(t.to_string())
    }
}

impl From<&String> for PromptText {
    fn from(t: &String) -> PromptText {
        PromptText::Text(t.clone())
    }
}

impl From<&PromptText> for PromptText {
    fn from(p: &PromptText) -> PromptText {
        p.clone()
    }
}

impl From<String> for PromptText {
    fn from(t: String) -> PromptText {
        PromptText::Text(t)
    }
}

/// A normalised record, as written to `train.jsonl` / `val.jsonl` (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Record {
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<Map<String, Value>>,
    },
    Chat {
        messages: Vec<Message>,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<Map<String, Value>>,
    },
    Prompt {
        prompt: PromptText,
        /// Kept as given (string, number or boolean): later stages grade answers with it.
        #[serde(skip_serializing_if = "Option::is_none")]
        answer: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<Map<String, Value>>,
    },
    Preference {
        prompt: PromptText,
        chosen: String,
        rejected: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<Map<String, Value>>,
    },
}

impl Record {
    pub fn format(&self) -> Format {
        match self {
            Record::Text { .. } => Format::Text,
            Record::Chat { .. } => Format::Chat,
            Record::Prompt { .. } => Format::Prompt,
            Record::Preference { .. } => Format::Preference,
        }
    }

    /// A text record with nothing but whitespace: not worth keeping, not an error.
    pub fn is_blank(&self) -> bool {
        matches!(self, Record::Text { text, .. } if text.trim().is_empty())
    }

    /// The text filters judge: the text, the prompt, or the contents of every field joined
    /// by blank lines (chat messages; prompt, chosen and rejected).
    pub fn filter_text(&self) -> Cow<'_, str> {
        match self {
            Record::Text { text, .. } => Cow::Borrowed(text),
            Record::Prompt { prompt, .. } => prompt.display(),
            Record::Chat { messages, .. } => Cow::Owned(
                messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n\n"),
            ),
            Record::Preference { prompt, chosen, rejected, .. } => {
                Cow::Owned(format!("{prompt}\n\n{chosen}\n\n{rejected}"))
            }
        }
    }

    /// The record's documents, for training a tokenizer: the text; each message's content;
    /// the prompt (not the reference answer); or prompt, chosen and rejected.
    pub fn into_texts(self) -> Vec<String> {
        match self {
            Record::Text { text, .. } => vec![text],
            Record::Prompt { prompt, .. } => prompt.into_texts(),
            Record::Chat { messages, .. } => messages.into_iter().map(|m| m.content).collect(),
            Record::Preference { prompt, chosen, rejected, .. } => {
                let mut texts = prompt.into_texts();
                texts.extend([chosen, rejected]);
                texts
            }
        }
    }

    /// Bytes of text in the record (what a batch of records holds in memory, roughly).
    pub fn text_len(&self) -> usize {
        match self {
            Record::Text { text, .. } => text.len(),
            Record::Prompt { prompt, .. } => prompt.len(),
            Record::Chat { messages, .. } => messages.iter().map(|m| m.content.len()).sum(),
            Record::Preference { prompt, chosen, rejected, .. } => {
                prompt.len() + chosen.len() + rejected.len()
            }
        }
    }

    /// Whether a filter's rewrite of [`Record::filter_text`] maps back onto the record: only
    /// when that text is one field.
    pub fn rewritable(&self) -> bool {
        matches!(self, Record::Text { .. } | Record::Prompt { prompt: PromptText::Text(_), .. })
    }

    /// Replaces the filtered field with a filter's rewrite (see [`Record::rewritable`]).
    pub fn rewrite(&mut self, new: String) {
        match self {
            Record::Text { text, .. } => *text = new,
            Record::Prompt { prompt: PromptText::Text(prompt), .. } => *prompt = new,
            Record::Prompt { .. } => {}
            Record::Chat { .. } | Record::Preference { .. } => {}
        }
    }
}

/// Why a record is left out: a short fixed reason (counted in `meta.json`) and the details.
#[derive(Debug, Clone, PartialEq)]
pub struct Bad {
    pub reason: &'static str,
    pub detail: String,
}

/// Reasons ([`Bad::reason`]).
pub const NOT_JSON: &str = "not JSON";
pub const NOT_UTF8: &str = "invalid UTF-8";
pub const MALFORMED: &str = "malformed record";
/// A preference pair with an empty response: well-formed, but nothing to learn from.
pub const EMPTY: &str = "empty response";
/// A preference pair whose responses are the same.
pub const IDENTICAL: &str = "identical responses";
/// Implicit-prompt strings that share no beginning.
pub const NO_PROMPT: &str = "no common prompt";
/// Conversations (or HH transcripts) that differ before their last answer.
pub const DIFFER: &str = "conversations differ before the last answer";

impl Bad {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Bad {
        Bad { reason, detail: detail.into() }
    }

    /// A well-formed record that holds nothing to learn from (an empty or repeated response):
    /// left out and counted, never an error.
    pub fn unusable(&self) -> bool {
        matches!(self.reason, EMPTY | IDENTICAL)
    }
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl From<String> for Bad {
    fn from(detail: String) -> Bad {
        Bad::new(MALFORMED, detail)
    }
}

impl From<&str> for Bad {
    fn from(detail: &str) -> Bad {
        Bad::new(MALFORMED, detail)
    }
}

/// Parses one JSON line into a record; the error says what is wrong with it.
pub fn parse_json(line: &str) -> Result<Record, Bad> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| Bad::new(NOT_JSON, format!("invalid JSON: {e}")))?;
    from_value(v)
}

/// Normalises one JSON value (a record of any input format).
pub fn from_value(v: Value) -> Result<Record, Bad> {
    let Value::Object(mut obj) = v else {
        return Err(format!("a record must be a JSON object, found {}", kind_of(&v)).into());
    };
    let has = |k: &str| obj.contains_key(k);
    let record = if has("messages") {
        let messages = messages(obj.remove("messages").expect("present"), "messages")?;
        Record::Chat { messages, meta: None }
    } else if has("chosen") || has("rejected") {
        preference(&mut obj)?
    } else if has("completion") {
        let prompt = obj.remove("prompt").ok_or("a `completion` needs a `prompt` beside it")?;
        let completion = obj.remove("completion").expect("present");
        let messages = match (prompt, completion) {
            (Value::String(p), Value::String(c)) => {
                vec![
                    Message { role: Role::User, content: p },
                    Message { role: Role::Assistant, content: c },
                ]
            }
            (p @ Value::Array(_), c @ Value::Array(_)) => {
                let mut m = messages(p, "prompt")?;
                m.extend(messages(c, "completion")?);
                m
            }
            (p, c) => {
                return Err(format!(
                    "`prompt` and `completion` must both be strings or both be lists of messages, found {} and {}",
                    kind_of(&p),
                    kind_of(&c)
                )
                .into());
            }
        };
        Record::Chat { messages, meta: None }
    } else if has("text") {
        Record::Text { text: string(obj.remove("text").expect("present"), "text")?, meta: None }
    } else if has("prompt") {
        let prompt = match obj.remove("prompt").expect("present") {
            Value::String(s) => PromptText::Text(s),
            // TRL's conversational prompt-only form.
            p @ Value::Array(_) => PromptText::from_turns(messages(p, "prompt")?, "prompt")?,
            other => {
                return Err(format!(
                    "`prompt` must be a string or a list of messages, found {}",
                    kind_of(&other)
                )
                .into());
            }
        };
        let answer = match obj.remove("answer") {
            None | Some(Value::Null) => None,
            Some(a @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => Some(a),
            Some(a) => {
                return Err(format!(
                    "`answer` must be a string, number or boolean, found {}",
                    kind_of(&a)
                )
                .into());
            }
        };
        Record::Prompt { prompt, answer, meta: None }
    } else {
        let mut found: Vec<String> = obj.keys().map(|k| format!("`{k}`")).collect();
        found.truncate(8);
        return Err(format!(
            "no field says what the record is: expected `text`, `messages`, `prompt` with `completion`, `prompt`, or `chosen` with `rejected`; found {}",
            if found.is_empty() { "no fields".to_string() } else { found.join(", ") }
        )
        .into());
    };
    Ok(with_meta(record, obj))
}

/// Moves the fields left in `rest` under `meta`.
fn with_meta(mut record: Record, mut rest: Map<String, Value>) -> Record {
    let mut meta = match rest.remove("meta") {
        Some(Value::Object(m)) => m,
        Some(other) => Map::from_iter([("meta".to_string(), other)]),
        None => Map::new(),
    };
    meta.extend(rest);
    let slot = match &mut record {
        Record::Text { meta, .. }
        | Record::Chat { meta, .. }
        | Record::Prompt { meta, .. }
        | Record::Preference { meta, .. } => meta,
    };
    *slot = (!meta.is_empty()).then_some(meta);
    record
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn string(v: Value, field: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("`{field}` must be a string, found {}", kind_of(&other))),
    }
}

fn messages(v: Value, field: &str) -> Result<Vec<Message>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "`{field}` must be a list of {{role, content}} messages, found {}",
            kind_of(&v)
        ));
    };
    if items.is_empty() {
        return Err(format!("`{field}` is an empty list"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(mut m) = m else {
                return Err(format!(
                    "`{field}[{i}]` must be an object with `role` and `content`, found {}",
                    kind_of(&m)
                ));
            };
            let role = match m.remove("role") {
                Some(Value::String(r)) => match r.as_str() {
                    "system" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    _ => {
                        return Err(format!(
                            "`{field}[{i}].role` is `{r}`: expected `system`, `user` or `assistant`"
                        ));
                    }
                },
                Some(other) => {
                    return Err(format!(
                        "`{field}[{i}].role` must be a string, found {}",
                        kind_of(&other)
                    ));
                }
                None => return Err(format!("`{field}[{i}]` has no `role`")),
            };
            let content = match m.remove("content") {
                Some(c) => string(c, &format!("{field}[{i}].content"))?,
                None => return Err(format!("`{field}[{i}]` has no `content`")),
            };
            Ok(Message { role, content })
        })
        .collect()
}

const HH_ASSISTANT: &str = "\n\nAssistant:";
const HH_HUMAN: &str = "\n\nHuman:";

/// A preference record in any of its forms (see the module doc).
fn preference(obj: &mut Map<String, Value>) -> Result<Record, Bad> {
    let chosen =
        obj.remove("chosen").ok_or("a preference record needs `chosen` beside `rejected`")?;
    let rejected =
        obj.remove("rejected").ok_or("a preference record needs `rejected` beside `chosen`")?;
    let prompt = match obj.remove("prompt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(PromptText::Text(s)),
        Some(p @ Value::Array(_)) => {
            Some(PromptText::from_turns(messages(p, "prompt")?, "prompt")?)
        }
        Some(other) => {
            return Err(format!(
                "`prompt` must be a string or a list of messages, found {}",
                kind_of(&other)
            )
            .into());
        }
    };
    let (prompt, chosen, rejected) = match (chosen, rejected) {
        (Value::String(c), Value::String(r)) => match prompt {
            Some(p) => (p, c, r),
            None if is_hh(&c) => hh_split(&c, &r)?,
            None => {
                let (p, c, r) = implicit_split(&c, &r)?;
                (PromptText::Text(p), c, r)
            }
        },
        (c @ Value::Array(_), r @ Value::Array(_)) => {
            let (c_prefix, c) = final_response(messages(c, "chosen")?, "chosen")?;
            let (r_prefix, r) = final_response(messages(r, "rejected")?, "rejected")?;
            let p = match prompt {
                Some(p) => p,
                None if c_prefix.is_empty() => {
                    return Err("`chosen` holds only the response: add a `prompt` field, or the prompt's turns before it".into());
                }
                None if c_prefix != r_prefix => {
                    return Err(Bad::new(
                        DIFFER,
                        "`chosen` and `rejected` differ before their final assistant message",
                    ));
                }
                None => PromptText::from_turns(c_prefix, "chosen")?,
            };
            (p, c, r)
        }
        (c, r) => {
            return Err(format!(
                "`chosen` and `rejected` must both be strings or both be lists of messages, found {} and {}",
                kind_of(&c),
                kind_of(&r)
            )
            .into());
        }
    };
    let (chosen, rejected) = (chosen.trim().to_string(), rejected.trim().to_string());
    if chosen.is_empty() || rejected.is_empty() {
        let which = if chosen.is_empty() { "chosen" } else { "rejected" };
        return Err(Bad::new(
            EMPTY,
            format!("the {which} response is empty (prompt {:?})", clip(&prompt.display())),
        ));
    }
    if chosen == rejected {
        return Err(Bad::new(
            IDENTICAL,
            format!("chosen and rejected are both {:?}", clip(&chosen)),
        ));
    }
    let prompt = match prompt {
        PromptText::Text(t) => PromptText::Text(t.trim().to_string()),
        turns => turns,
    };
    Ok(Record::Preference { prompt, chosen, rejected, meta: None })
}

/// The messages before the last one, and the last one's content, which must be the
/// assistant's.
fn final_response(mut m: Vec<Message>, field: &str) -> Result<(Vec<Message>, String), String> {
    match m.pop() {
        Some(Message { role: Role::Assistant, content }) => Ok((m, content.trim().to_string())),
        _ => Err(format!("the last message of `{field}` must be the assistant's response")),
    }
}

/// Whether a string is an Anthropic HH transcript (starts with a human turn).
fn is_hh(t: &str) -> bool {
    t.starts_with(HH_HUMAN) || t.starts_with(HH_HUMAN.trim_start_matches('\n'))
}

/// A transcript before its final assistant turn, and that turn's text.
fn hh_final_turn<'t>(t: &'t str, field: &str) -> Result<(&'t str, String), String> {
    t.rfind(HH_ASSISTANT)
        .map(|i| (&t[..i], t[i + HH_ASSISTANT.len()..].trim().to_string()))
        .ok_or_else(|| {
            format!("`{field}` is an Anthropic HH transcript without an \"\\n\\nAssistant:\" turn")
        })
}

/// Splits Anthropic HH transcripts into the shared prompt and the two final responses: for
/// one exchange the human's message, for several the earlier turns as a conversation.
fn hh_split(chosen: &str, rejected: &str) -> Result<(PromptText, String, String), Bad> {
    let (c_prefix, c) = hh_final_turn(chosen, "chosen")?;
    let (r_prefix, r) = hh_final_turn(rejected, "rejected")?;
    if c_prefix != r_prefix {
        return Err(Bad::new(
            DIFFER,
            format!(
                "the transcripts differ before their final \"Assistant:\" turn: {:?} vs {:?}",
                clip(c_prefix),
                clip(r_prefix)
            ),
        ));
    }
    Ok((PromptText::from_turns(hh_turns(c_prefix), "chosen")?, c, r))
}

/// An HH transcript's turns: text after each `\n\nHuman:` or `\n\nAssistant:` marker (the
/// first may lack its blank lines); text before the first marker is a system turn.
fn hh_turns(t: &str) -> Vec<Message> {
    let mut turns = Vec::new();
    let mut rest = t.trim_start_matches('\n');
    let mut role = Role::System;
    for (marker, r) in [(HH_HUMAN, Role::User), (HH_ASSISTANT, Role::Assistant)] {
        if let Some(after) = rest.strip_prefix(marker.trim_start_matches('\n')) {
            rest = after;
            role = r;
            break;
        }
    }
    loop {
        let next = [(HH_HUMAN, Role::User), (HH_ASSISTANT, Role::Assistant)]
            .into_iter()
            .filter_map(|(m, r)| rest.find(m).map(|i| (i, m, r)))
            .min_by_key(|(i, ..)| *i);
        let (body, after) = match next {
            Some((i, m, r)) => {
                let body = &rest[..i];
                let after = &rest[i + m.len()..];
                let this = role;
                role = r;
                ((this, body), Some(after))
            }
            None => ((role, rest), None),
        };
        if !(body.0 == Role::System && body.1.trim().is_empty()) {
            turns.push(Message { role: body.0, content: body.1.trim().to_string() });
        }
        match after {
            Some(a) => rest = a,
            None => break,
        }
    }
    turns
}

/// TRL's `extract_prompt` for strings without a prompt: the prompt is their common
/// beginning, cut at the first differing character, one earlier if the character before it
/// is a space.
fn implicit_split(c: &str, r: &str) -> Result<(String, String, String), Bad> {
    if c.trim() == r.trim() {
        return Ok((String::new(), c.to_string(), r.to_string()));
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
        return Err(Bad::new(
            NO_PROMPT,
            format!(
                "no `prompt`, and chosen {:?} and rejected {:?} share no beginning",
                clip(c),
                clip(r)
            ),
        ));
    }
    Ok((prompt.to_string(), c[cut..].to_string(), r[cut..].to_string()))
}

/// The first 80 characters.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// How a `.txt` file is cut into documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxtSplit {
    /// The whole file is one document.
    File,
    /// Each block of lines between blank lines is a document.
    #[default]
    BlankLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Text,
    JsonLines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A file's name (lowercased) less its compression suffix, and the compression it names
/// (`.gz`, `.zst`, else none).
pub fn compression_of(path: &Path) -> (String, Compression) {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if let Some(s) = name.strip_suffix(".gz") {
        (s.to_string(), Compression::Gzip)
    } else if let Some(s) = name.strip_suffix(".zst") {
        (s.to_string(), Compression::Zstd)
    } else {
        (name, Compression::None)
    }
}

/// What a file holds and how it is compressed, from its name.
pub fn classify(path: &Path) -> Result<(FileKind, Compression), String> {
    let (inner, compression) = compression_of(path);
    let kind = if inner.ends_with(".txt") {
        FileKind::Text
    } else if inner.ends_with(".jsonl") {
        FileKind::JsonLines
    } else {
        return Err(format!(
            "`{}`: unsupported file type: use .txt or .jsonl, optionally compressed (.txt.gz, .jsonl.zst, …)",
            path.display()
        ));
    };
    Ok((kind, compression))
}

/// Counts the bytes read from the file (before decompression), for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

const BUF: usize = 1 << 16;

/// Opens a file as a decompressed stream; `read` counts the compressed bytes consumed.
pub fn open(
    path: &Path,
    compression: Compression,
    read: Arc<AtomicU64>,
) -> io::Result<Box<dyn BufRead>> {
    let file = Counting { inner: File::open(path)?, count: read };
    Ok(match compression {
        Compression::None => Box::new(BufReader::with_capacity(BUF, file)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        )),
        Compression::Zstd => {
            Box::new(BufReader::with_capacity(BUF, zstd::stream::read::Decoder::new(file)?))
        }
    })
}

/// One item read from a file: the line it starts on, and the record or what is wrong.
pub type Item = (usize, Result<Record, Bad>);

/// Reads records from one file, streaming.
pub struct RecordReader {
    input: Box<dyn BufRead>,
    kind: FileKind,
    split: TxtSplit,
    line: usize,
    buf: Vec<u8>,
    done: bool,
    rename: Option<Rename>,
}

/// Renames a JSON record's fields before it is normalised (a column mapping).
pub type Rename = Box<dyn Fn(Value) -> Value>;

impl RecordReader {
    pub fn new(input: Box<dyn BufRead>, kind: FileKind, split: TxtSplit) -> Self {
        RecordReader { input, kind, split, line: 0, buf: Vec::new(), done: false, rename: None }
    }

    /// JSON lines go through `rename` before they are normalised.
    pub fn with_rename(mut self, rename: Rename) -> Self {
        self.rename = Some(rename);
        self
    }

    /// Reads the next line into `self.buf` without its line ending; false at the end.
    fn next_line(&mut self) -> io::Result<bool> {
        self.buf.clear();
        if self.done || self.input.read_until(b'\n', &mut self.buf)? == 0 {
            self.done = true;
            return Ok(false);
        }
        self.line += 1;
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.buf.drain(..3);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        Ok(true)
    }

    /// The next record, `None` at the end of the file. An `Err` is an I/O or decompression
    /// failure (the file cannot be read further); a malformed record is an `Ok` item.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        match (self.kind, self.split) {
            (FileKind::JsonLines, _) => self.next_json(),
            (FileKind::Text, TxtSplit::BlankLine) => self.next_block(),
            (FileKind::Text, TxtSplit::File) => self.whole_file(),
        }
    }

    fn next_json(&mut self) -> io::Result<Option<Item>> {
        while self.next_line()? {
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let item = match std::str::from_utf8(&self.buf) {
                Ok(s) => match &self.rename {
                    None => parse_json(s),
                    Some(rename) => serde_json::from_str(s)
                        .map_err(|e| Bad::new(NOT_JSON, format!("invalid JSON: {e}")))
                        .and_then(|v| from_value(rename(v))),
                },
                Err(e) => Err(Bad::new(
                    NOT_UTF8,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
                )),
            };
            return Ok(Some((self.line, item)));
        }
        Ok(None)
    }

    fn next_block(&mut self) -> io::Result<Option<Item>> {
        let mut text = String::new();
        let mut start = 0;
        let mut bad: Option<Bad> = None;
        while self.next_line()? {
            let blank = self.buf.iter().all(u8::is_ascii_whitespace);
            if blank {
                if start == 0 {
                    continue;
                }
                break;
            }
            if start == 0 {
                start = self.line;
            }
            match std::str::from_utf8(&self.buf) {
                Ok(s) => {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(s);
                }
                Err(e) if bad.is_none() => {
                    bad = Some(Bad::new(
                        NOT_UTF8,
                        format!(
                            "invalid UTF-8 on line {} at byte {}",
                            self.line,
                            e.valid_up_to() + 1
                        ),
                    ));
                }
                Err(_) => {}
            }
        }
        if start == 0 {
            return Ok(None);
        }
        Ok(Some((start, bad.map_or_else(|| Ok(Record::Text { text, meta: None }), Err))))
    }

    fn whole_file(&mut self) -> io::Result<Option<Item>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let mut bytes = Vec::new();
        self.input.read_to_end(&mut bytes)?;
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        let item = match String::from_utf8(bytes) {
            Ok(s) => Ok(Record::Text { text: s.replace("\r\n", "\n"), meta: None }),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
                return Ok(Some((line, Err(Bad::new(NOT_UTF8, "invalid UTF-8")))));
            }
        };
        Ok(Some((1, item)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    fn record(v: Value) -> Result<Value, String> {
        from_value(v).map(|r| serde_json::to_value(r).unwrap()).map_err(|e| e.detail)
    }

    fn reason(v: Value) -> &'static str {
        from_value(v).unwrap_err().reason
    }

    #[test]
    fn text_records_keep_extra_fields_as_meta() {
        assert_eq!(record(json!({"text": "hi"})).unwrap(), json!({"text": "hi"}));
        assert_eq!(
            record(json!({"text": "hi", "id": 3, "meta": {"src": "web"}})).unwrap(),
            json!({"text": "hi", "meta": {"id": 3, "src": "web"}})
        );
        let line =
            serde_json::to_string(&from_value(json!({"text": "hi", "id": 3})).unwrap()).unwrap();
        assert_eq!(line, r#"{"text":"hi","meta":{"id":3}}"#);
    }

    #[test]
    fn chat_records_from_messages_and_prompt_completion() {
        let m = json!({"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]});
        assert_eq!(record(m.clone()).unwrap(), m);
        assert_eq!(
            record(json!({"prompt": "Hi", "completion": "Hello!"})).unwrap(),
            json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})
        );
        assert_eq!(
            record(json!({"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Yo"}]})).unwrap(),
            json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})
        );
    }

    #[test]
    fn prompt_records_keep_their_answer() {
        assert_eq!(
            record(json!({"prompt": "What is 7 plus 5?", "answer": "12"})).unwrap(),
            json!({"prompt": "What is 7 plus 5?", "answer": "12"})
        );
        assert_eq!(
            record(json!({"prompt": "2+2?", "answer": 4})).unwrap(),
            json!({"prompt": "2+2?", "answer": 4})
        );
        assert_eq!(record(json!({"prompt": "Say hi."})).unwrap(), json!({"prompt": "Say hi."}));
    }

    #[test]
    fn preference_records_in_every_form() {
        assert_eq!(
            record(json!({"prompt": "Q", "chosen": "good", "rejected": "bad"})).unwrap(),
            json!({"prompt": "Q", "chosen": "good", "rejected": "bad"})
        );
        // Anthropic HH: one human turn becomes the prompt.
        let hh = json!({
            "chosen": "\n\nHuman: What colour is the sky?\n\nAssistant: It is blue.",
            "rejected": "\n\nHuman: What colour is the sky?\n\nAssistant: Go away."
        });
        assert_eq!(
            record(hh).unwrap(),
            json!({"prompt": "What colour is the sky?", "chosen": "It is blue.", "rejected": "Go away."})
        );
        // Several turns are a conversation up to the final assistant turn.
        let hh = json!({
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Sky colour?\n\nAssistant: Blue.",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Sky colour?\n\nAssistant: No."
        });
        assert_eq!(
            record(hh).unwrap(),
            json!({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Sky colour?"}], "chosen": "Blue.", "rejected": "No."})
        );
        // Conversational (TRL) form.
        let conv = json!({
            "chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}]
        });
        assert_eq!(
            record(conv).unwrap(),
            json!({"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."})
        );
    }

    /// TRL's forms beside the ones above: conversational prompt-only, implicit prompts.
    #[test]
    fn trl_prompt_only_and_implicit_prompts() {
        assert_eq!(
            record(json!({"prompt": [{"role": "user", "content": "Say hi."}]})).unwrap(),
            json!({"prompt": "Say hi."})
        );
        // The common beginning, less the space before the first difference, as TRL's
        // `extract_prompt` splits it; multi-byte characters are never cut.
        assert_eq!(
            record(json!({"chosen": "The sky is blue.", "rejected": "The sky is green."})).unwrap(),
            json!({"prompt": "The sky is", "chosen": "blue.", "rejected": "green."})
        );
        assert_eq!(
            record(json!({"chosen": "Café: oui", "rejected": "Café: non"})).unwrap(),
            json!({"prompt": "Café:", "chosen": "oui", "rejected": "non"})
        );
        // Implicit conversational: the shared turns are the prompt.
        let conv = json!({
            "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
            "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]
        });
        assert_eq!(
            record(conv).unwrap(),
            json!({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"})
        );
    }

    /// Multi-turn prompts are conversations: read back as they were written, shown as a
    /// transcript, and turned into the chat model's messages.
    #[test]
    fn multi_turn_prompts_are_conversations() {
        let turns = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": " Sky? "}]);
        let r = from_value(json!({"prompt": turns.clone(), "answer": "blue"})).unwrap();
        let Record::Prompt { prompt, .. } = &r else { panic!("{r:?}") };
        assert_eq!(prompt.messages().len(), 4);
        assert_eq!(prompt.messages()[3], Message::user("Sky?"));
        assert_eq!(
            prompt.display(),
            "System: Be brief.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Sky?"
        );
        let line = serde_json::to_string(&r).unwrap();
        let back: PromptText =
            serde_json::from_value(serde_json::from_str::<Value>(&line).unwrap()["prompt"].clone())
                .unwrap();
        assert_eq!(&back, prompt);
        // A prompt must end with the user's turn; one user turn is plain text.
        let e = record(json!({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]})).unwrap_err();
        assert!(e.contains("last turn of `prompt` must be the user's"), "{e}");
        assert_eq!(
            serde_json::to_value(PromptText::from_turns(vec![Message::user(" x ")], "p").unwrap())
                .unwrap(),
            json!("x")
        );
        assert_eq!(
            hh_turns("\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Sky?"),
            vec![
                Message::user("Hi"),
                Message { role: Role::Assistant, content: "Hello.".into() },
                Message::user("Sky?")
            ]
        );
        assert_eq!(hh_turns("Be kind.\n\nHuman: Hi")[0].role, Role::System);
    }

    /// Pairs that cannot teach anything, and pairs that are not one conversation, each with
    /// its reason (the `rank` stage counts them; `ingest` leaves the unusable ones out).
    #[test]
    fn each_quirk_of_preference_data_has_its_reason() {
        let cases = [
            (
                json!({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Bye!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: Bye\n\nAssistant: Bye!"}),
                DIFFER,
            ),
            (
                json!({"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}),
                MALFORMED,
            ),
            (
                json!({"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}),
                EMPTY,
            ),
            (
                json!({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}),
                IDENTICAL,
            ),
            (json!({"prompt": "Hi", "chosen": "", "rejected": "Hello"}), EMPTY),
            (json!({"prompt": "Hi", "chosen": "Hello", "rejected": " Hello "}), IDENTICAL),
            (json!({"chosen": "Same text", "rejected": "Same text"}), IDENTICAL),
            (json!({"chosen": "Hello there", "rejected": "Hello"}), EMPTY),
            (json!({"chosen": "Yes.", "rejected": "No."}), NO_PROMPT),
            (json!({"prompt": "Hi", "chosen": 3, "rejected": "Hello"}), MALFORMED),
        ];
        for (v, want) in cases {
            let got = from_value(v.clone()).unwrap_err();
            assert_eq!(got.reason, want, "{v}: {got:?}");
            assert!(!got.detail.is_empty());
            assert_eq!(got.unusable(), matches!(want, EMPTY | IDENTICAL));
        }
        assert_eq!(reason(json!({"text": 1})), MALFORMED);
        assert_eq!(parse_json("{oops").unwrap_err().reason, NOT_JSON);
    }

    #[test]
    fn malformed_records_say_what_is_wrong() {
        let err = |v: Value| record(v).unwrap_err();
        assert!(err(json!([1])).contains("must be a JSON object, found a list"));
        assert!(
            err(json!({"title": "x"})).contains("no field says what the record is")
                && err(json!({"title": "x"})).contains("`title`")
        );
        assert!(err(json!({"text": 5})).contains("`text` must be a string, found a number"));
        assert!(err(json!({"messages": []})).contains("empty list"));
        assert!(
            err(json!({"messages": [{"role": "bot", "content": "x"}]}))
                .contains("`messages[0].role` is `bot`")
        );
        assert!(
            err(json!({"messages": [{"role": "user"}]})).contains("`messages[0]` has no `content`")
        );
        assert!(err(json!({"completion": "x"})).contains("needs a `prompt`"));
        assert!(err(json!({"chosen": "a"})).contains("needs `rejected`"));
        assert!(err(json!({"chosen": "a", "rejected": "b"})).contains("share no beginning"));
        assert!(err(json!({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"})).contains("differ"));
        assert!(err(json!({"prompt": "q", "answer": [1]})).contains("`answer` must be"));
        assert!(parse_json("{\"text\": ").unwrap_err().detail.starts_with("invalid JSON"));
    }

    #[test]
    fn classifies_file_names() {
        assert_eq!(classify(Path::new("a/b.TXT")).unwrap(), (FileKind::Text, Compression::None));
        assert_eq!(
            classify(Path::new("b.jsonl.gz")).unwrap(),
            (FileKind::JsonLines, Compression::Gzip)
        );
        assert_eq!(classify(Path::new("b.txt.zst")).unwrap(), (FileKind::Text, Compression::Zstd));
        assert!(classify(Path::new("b.csv")).unwrap_err().contains("unsupported file type"));
    }

    fn read_all(
        bytes: &[u8],
        kind: FileKind,
        split: TxtSplit,
    ) -> Vec<(usize, Result<String, String>)> {
        let mut r = RecordReader::new(Box::new(io::Cursor::new(bytes.to_vec())), kind, split);
        let mut out = Vec::new();
        while let Some((line, item)) = r.next_item().unwrap() {
            out.push((line, item.map(|rec| rec.filter_text().into_owned()).map_err(|e| e.detail)));
        }
        out
    }

    #[test]
    fn txt_blocks_and_whole_files() {
        let src = b"\xEF\xBB\xBFFirst line\r\nsame doc\n\n  \nSecond doc\n\n\n";
        assert_eq!(
            read_all(src, FileKind::Text, TxtSplit::BlankLine),
            vec![(1, Ok("First line\nsame doc".into())), (5, Ok("Second doc".into()))]
        );
        assert_eq!(
            read_all(src, FileKind::Text, TxtSplit::File),
            vec![(1, Ok("First line\nsame doc\n\n  \nSecond doc\n\n\n".into()))]
        );
        let bad = b"ok\n\nfine\nbad \xFF here\nmore\n\nlast";
        let items = read_all(bad, FileKind::Text, TxtSplit::BlankLine);
        assert_eq!(items[1], (3, Err("invalid UTF-8 on line 4 at byte 5".into())));
        assert_eq!(items[2], (7, Ok("last".into())));
        assert_eq!(
            read_all(bad, FileKind::Text, TxtSplit::File),
            vec![(4, Err("invalid UTF-8".into()))]
        );
    }

    #[test]
    fn jsonl_lines_with_numbers() {
        let src =
            b"{\"text\": \"a\"}\n\n{\"text\": \nnot json\n{\"text\": \"\xFF\"}\n{\"text\": \"b\"}";
        let items = read_all(src, FileKind::JsonLines, TxtSplit::BlankLine);
        let lines: Vec<usize> = items.iter().map(|i| i.0).collect();
        assert_eq!(lines, vec![1, 3, 4, 5, 6]);
        assert_eq!(items[0].1, Ok("a".into()));
        assert!(items[1].1.as_ref().unwrap_err().starts_with("invalid JSON"));
        assert!(items[2].1.as_ref().unwrap_err().starts_with("invalid JSON"));
        assert_eq!(items[3].1, Err("invalid UTF-8 at byte 11 of the line".into()));
        assert_eq!(items[4].1, Ok("b".into()));
    }

    #[test]
    fn reads_gzip_and_zstd() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"{\"text\": \"one\"}\n{\"text\": \"two\"}\n";
        let gz = dir.path().join("a.jsonl.gz");
        let mut e = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        e.write_all(body).unwrap();
        e.finish().unwrap();
        let zst = dir.path().join("a.jsonl.zst");
        std::fs::write(&zst, zstd::encode_all(&body[..], 3).unwrap()).unwrap();
        for path in [gz, zst] {
            let (kind, compression) = classify(&path).unwrap();
            let count = Arc::new(AtomicU64::new(0));
            let mut r = RecordReader::new(
                open(&path, compression, count.clone()).unwrap(),
                kind,
                TxtSplit::File,
            );
            let mut texts = Vec::new();
            while let Some((_, item)) = r.next_item().unwrap() {
                texts.push(item.unwrap().filter_text().into_owned());
            }
            assert_eq!(texts, vec!["one", "two"], "{}", path.display());
            assert_eq!(count.load(Ordering::Relaxed), std::fs::metadata(&path).unwrap().len());
        }
        // A corrupt stream is an I/O error, not a panic.
        let broken = dir.path().join("b.jsonl.gz");
        std::fs::write(&broken, b"\x1f\x8b\x08\x00garbage").unwrap();
        let mut r = RecordReader::new(
            open(&broken, Compression::Gzip, Default::default()).unwrap(),
            FileKind::JsonLines,
            TxtSplit::File,
        );
        assert!(r.next_item().is_err());
    }
}
