//! The chat format every stage and tool shares: ChatML.
//!
//! ```text
//! <|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n
//! ```
//!
//! One place renders it ([`render`]) and turns it into tokens ([`ChatTokenizer::encode`], with
//! the per-token "this is an assistant token" mask SFT trains on); SFT, sampling (`hone chat`,
//! `evaluate`) and later the reward model and PPO all call these. [`JINJA`] is the same
//! template in HuggingFace's form: SFT writes it into the model's `tokenizer_config.json` as
//! `chat_template`, so `tokenizer.apply_chat_template(messages)` in Python gives the same text
//! (tested against `minijinja` below).
//!
//! Tokens are encoded piece by piece (the special tokens by id, the role line, each content)
//! rather than from the rendered string, so that a message's tokens never merge with the next
//! one's and the assistant mask is exact. With a GPT-2-style pre-tokenizer the two agree,
//! because `\n` and the special tokens are always split off on their own (tested below).
//!
//! The mask covers each assistant message's content and its closing `<|im_end|>` (the model
//! must learn to stop), not the `<|im_start|>assistant\n` header (that is the prompt) nor
//! the `\n` after `<|im_end|>` (sampling stops at `<|im_end|>`, so it is never generated).
//!
//! **A model's own template.** A model imported from a folder whose tokenizer config has a
//! `chat_template` of its own (SmolLM2's, Qwen's, Llama 3's) keeps it: the conversation is
//! rendered by that Jinja template ([`minijinja`], with transformers' settings: blocks trimmed,
//! Python's string methods, `raise_exception`) and tokenized whole, as
//! `apply_chat_template(…, tokenize=True)` does; an assistant message's tokens are those from
//! the end of the conversation before it rendered with the generation prompt to the end of
//! the conversation through it (TRL's way of finding them). The turn ends at the
//! tokenizer config's `eos_token`.

use std::path::Path;

use hone_engine::stage::StageError;

use crate::data::formats::{Message, Role};
use crate::model::ModelError;
use crate::model::export;

pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// What comes between a message's role line and its content: one space, so that a
/// message's first word is the same token as that word anywhere else in a sentence (` Finn`,
/// ` 6`). A GPT-2-style tokenizer has two tokens for each word, with and without its leading
/// space; without this prefix an answer would start with the rarer unspaced one (`Finn` after
/// a newline), and a small model must learn that it means the spaced ` Finn` of the question:
/// tinyworld's SFT model often wrote the wrong name or number there ("Lena's best friend is
/// Pia." for Finn's, "7 plus 11 is 17." for 6 + 11).
pub const CONTENT_PREFIX: &str = " ";

/// ChatML as a HuggingFace `chat_template` (Jinja).
pub const JINJA: &str = r"{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n ' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// `tokenizer.json` and a `tokenizer_config.json` with the chat template, so that
/// `AutoTokenizer.from_pretrained(dir).apply_chat_template(...)` renders ChatML. A tokenizer
/// whose folder has a chat template of its own (an imported model's) keeps it: its
/// `tokenizer_config.json` (and `chat_template.jinja`, `special_tokens_map.json`) are copied.
pub fn write_tokenizer(
    dir: &Path,
    tokenizer_json: &Path,
    block_size: usize,
) -> Result<(), StageError> {
    std::fs::copy(tokenizer_json, dir.join(export::TOKENIZER))
        .map_err(StageError::io(format!("cannot copy `{}`", tokenizer_json.display())))?;
    let from = tokenizer_json.parent().unwrap_or(Path::new("."));
    if let (Some(t), _) = folder_template(from).map_err(|e| StageError::msg(e.to_string()))?
        && t != JINJA
    {
        for name in [export::TOKENIZER_CONFIG, JINJA_FILE, SPECIAL_TOKENS_MAP] {
            if from.join(name).exists() {
                std::fs::copy(from.join(name), dir.join(name))
                    .map_err(StageError::io(format!("cannot copy `{name}`")))?;
            }
        }
        return Ok(());
    }
    write_chatml_config(dir, block_size)
}

/// `tokenizer_config.json` for hone's ChatML (the special tokens and [`JINJA`]), beside a
/// `tokenizer.json` already in `dir`.
pub fn write_chatml_config(dir: &Path, block_size: usize) -> Result<(), StageError> {
    let cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": false,
        "bos_token": END_OF_TEXT,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "chat_template": JINJA,
    });
    let text = serde_json::to_string_pretty(&cfg).expect("plain data") + "\n";
    std::fs::write(dir.join(export::TOKENIZER_CONFIG), text)
        .map_err(StageError::io(format!("cannot write `{}`", export::TOKENIZER_CONFIG)))
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// The conversation as text; with `add_generation_prompt`, followed by the header that asks
/// for the assistant's next message.
pub fn render(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str(IM_START);
        s.push_str(role_name(m.role));
        s.push('\n');
        s.push_str(CONTENT_PREFIX);
        s.push_str(&m.content);
        s.push_str(IM_END);
        s.push('\n');
    }
    if add_generation_prompt {
        s.push_str(IM_START);
        s.push_str("assistant\n");
    }
    s
}

/// A conversation as token ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Per token: part of an assistant message (its content or closing `<|im_end|>`).
    pub assistant: Vec<bool>,
    /// Per message: where its tokens end (exclusive), trailing `\n` included.
    pub ends: Vec<usize>,
}

/// A tokenizer that knows the chat tokens' ids.
pub struct ChatTokenizer {
    tok: tokenizers::Tokenizer,
    /// The token that opens a turn (ChatML's `<|im_start|>`; a model's own template: the
    /// first special token of its assistant header). Sampling stops at it too.
    pub im_start: u32,
    /// The token that ends a turn (ChatML's `<|im_end|>`, a model's `eos_token`).
    pub im_end: u32,
    /// Padding, and the start of generation without a prompt (`<|endoftext|>`, a model's
    /// `pad_token` or else its `eos_token`).
    pub end_of_text: u32,
    template: Option<Box<Jinja>>,
}

/// A model's own chat template, ready to render.
struct Jinja {
    env: minijinja::Environment<'static>,
    /// The special tokens' text, for the template's `bos_token` and `eos_token`.
    bos: String,
    eos: String,
    /// Where the template came from, for errors.
    source: std::path::PathBuf,
}

/// A `tokenizer_config.json` token: a string, or `{"content": …}`.
fn token_text(v: &serde_json::Value) -> Option<String> {
    v.as_str().or_else(|| v["content"].as_str()).map(String::from)
}

/// The chat template a model folder holds, if any: `tokenizer_config.json`'s `chat_template`
/// (a string, or a list of named templates: `default`), or `chat_template.jinja`
/// (transformers 5 writes it apart).
pub fn folder_template(dir: &Path) -> Result<(Option<String>, serde_json::Value), ModelError> {
    let cfg_path = dir.join(export::TOKENIZER_CONFIG);
    let cfg: serde_json::Value = if cfg_path.exists() {
        let text = std::fs::read_to_string(&cfg_path).map_err(ModelError::io(&cfg_path))?;
        serde_json::from_str(&text).map_err(|e| ModelError::format(&cfg_path, e.to_string()))?
    } else {
        serde_json::Value::Null
    };
    let inline = match &cfg["chat_template"] {
        serde_json::Value::String(t) => Some(t.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(String::from),
        _ => None,
    };
    let file = dir.join(JINJA_FILE);
    let template = match inline {
        Some(t) => Some(t),
        None if file.exists() => {
            Some(std::fs::read_to_string(&file).map_err(ModelError::io(&file))?)
        }
        None => None,
    };
    Ok((template, cfg))
}

/// Where transformers 5 keeps a chat template, beside `tokenizer_config.json`.
pub const JINJA_FILE: &str = "chat_template.jinja";
/// transformers' list of a tokenizer's special tokens (older folders have it).
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";

impl ChatTokenizer {
    /// Reads `tokenizer.json`; fails when it lacks a chat token or gives one an id outside
    /// the model's `vocab_size`, saying how to fix the pipeline.
    pub fn from_file(path: &Path, vocab_size: usize) -> Result<ChatTokenizer, ModelError> {
        let tok = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::format(path, e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if let (Some(template), cfg) = folder_template(dir)?
            && template != JINJA
        {
            return Self::with_template(
                tok,
                template,
                &cfg,
                &dir.join(export::TOKENIZER_CONFIG),
                vocab_size,
            );
        }
        let id = |t: &str| tok.token_to_id(t).filter(|&i| (i as usize) < vocab_size);
        let missing: Vec<&str> =
            [END_OF_TEXT, IM_START, IM_END].into_iter().filter(|t| id(t).is_none()).collect();
        if !missing.is_empty() {
            return Err(ModelError::format(
                path,
                format!(
                    "the tokenizer has no {} token within the model's {vocab_size} ids, so it cannot hold ChatML conversations\n   = help: train the tokenizer with the chat tokens (the `tokenizer` stage's default `special_tokens: [\"{END_OF_TEXT}\", \"{IM_START}\", \"{IM_END}\"]`) and pretrain on it again",
                    missing.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let (im_start, im_end, end_of_text) =
            (id(IM_START).unwrap(), id(IM_END).unwrap(), id(END_OF_TEXT).unwrap());
        Ok(ChatTokenizer { tok, im_start, im_end, end_of_text, template: None })
    }

    /// A tokenizer with a model's own chat template (see the module doc).
    fn with_template(
        tok: tokenizers::Tokenizer,
        template: String,
        cfg: &serde_json::Value,
        cfg_path: &Path,
        vocab_size: usize,
    ) -> Result<ChatTokenizer, ModelError> {
        let special = |key: &str| -> Result<Option<(String, u32)>, ModelError> {
            let Some(text) = token_text(&cfg[key]) else { return Ok(None) };
            match tok.token_to_id(&text).filter(|&i| (i as usize) < vocab_size) {
                Some(id) => Ok(Some((text, id))),
                None => Err(ModelError::format(
                    cfg_path,
                    format!(
                        "`{key}`: {text:?} is not a token of the tokenizer within the model's {vocab_size} ids"
                    ),
                )),
            }
        };
        let (eos, im_end) = special("eos_token")?.ok_or_else(|| {
            ModelError::format(cfg_path, "`eos_token`: missing; hone needs the token that ends an assistant turn\n   = help: set `eos_token` in tokenizer_config.json to the template's end-of-turn token")
        })?;
        let end_of_text = special("pad_token")?.map_or(im_end, |(_, id)| id);
        let bos = special("bos_token")?.map(|(t, _)| t).unwrap_or_default();
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        // A fixed date: the same conversation renders the same tokens on any day.
        env.add_function("strftime_now", |_fmt: String| "26 Jul 2024".to_string());
        env.add_template_owned("chat", template).map_err(|e| {
            ModelError::format(cfg_path, format!("`chat_template` does not parse: {e}"))
        })?;
        let mut t = ChatTokenizer {
            tok,
            im_start: im_end,
            im_end,
            end_of_text,
            template: Some(Box::new(Jinja { env, bos, eos, source: cfg_path.to_path_buf() })),
        };
        // The turn opener: the first special token of the assistant header (a template that
        // refuses an empty conversation has none found here: the turn's end stands in).
        if let (Ok(plain), Ok(header)) = (t.render(&[], false), t.render(&[], true))
            && let Some(rest) = header.strip_prefix(&plain)
        {
            let first = t.text_ids(rest)?.into_iter().find(|&i| {
                t.tok
                    .get_added_vocabulary()
                    .is_special_token(&t.tok.id_to_token(i).unwrap_or_default())
            });
            t.im_start = first.unwrap_or(im_end);
        }
        Ok(t)
    }

    /// The text of a conversation, by the model's own template or hone's ChatML.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let Some(j) = &self.template else { return Ok(render(messages, add_generation_prompt)) };
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({ "role": role_name(m.role), "content": m.content }))
            .collect();
        let t = j.env.get_template("chat").expect("added at load");
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => j.bos,
            eos_token => j.eos,
        })
        .map_err(|e| {
            ModelError::format(
                &j.source,
                format!("the chat template fails on a conversation of {} messages: {e}\n   = help: hone renders system, user and assistant messages; fix the template or use a model folder whose template takes them", messages.len()),
            )
        })
    }

    /// What a reply's text starts with that is not part of the message (hone's ChatML puts
    /// [`CONTENT_PREFIX`] before every content; a model's own template, nothing).
    pub fn content_prefix(&self) -> &'static str {
        if self.template.is_some() { "" } else { CONTENT_PREFIX }
    }

    /// [`ChatTokenizer::encode`] for a model's own template: the whole text tokenized, the
    /// assistant spans found by rendering prefixes.
    fn encode_jinja(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Encoded, ModelError> {
        let full = self.render(messages, add_generation_prompt)?;
        let source = self.template.as_ref().map(|j| j.source.as_path()).unwrap_or(Path::new("."));
        let enc = self
            .tok
            .encode(full.as_str(), false)
            .map_err(|e| ModelError::Invalid(format!("cannot tokenize the conversation: {e}")))?;
        let offsets = enc.get_offsets();
        let prefix = |n: usize, add: bool| -> Result<usize, ModelError> {
            let text = self.render(&messages[..n], add)?;
            if !full.starts_with(&text) {
                return Err(ModelError::format(
                    source,
                    format!(
                        "the chat template renders the first {n} messages as text that does not begin the whole conversation, so hone cannot tell which tokens are the assistant's\n   = help: a template must render a conversation's messages one after another (as transformers' `apply_chat_template` needs for assistant masks too)"
                    ),
                ));
            }
            Ok(text.len())
        };
        let mut spans = Vec::new();
        let mut ends = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let end = prefix(i + 1, false)?;
            if m.role == Role::Assistant {
                spans.push(prefix(i, true)?..end);
            }
            ends.push(offsets.iter().take_while(|o| o.0 < end).count());
        }
        let assistant = offsets.iter().map(|o| spans.iter().any(|s| s.contains(&o.0))).collect();
        Ok(Encoded { ids: enc.get_ids().to_vec(), assistant, ends })
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tok
    }

    /// Plain text (no special tokens interpreted specially beyond what the tokenizer does).
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tok
            .encode(text, false)
            .map_err(|e| ModelError::Invalid(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The tokens of [`render`]`(messages, add_generation_prompt)`, with the assistant mask.
    pub fn encode(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Encoded, ModelError> {
        if self.template.is_some() {
            return self.encode_jinja(messages, add_generation_prompt);
        }
        let mut e = Encoded { ids: Vec::new(), assistant: Vec::new(), ends: Vec::new() };
        let newline = self.text_ids("\n")?;
        let push = |e: &mut Encoded, ids: &[u32], train: bool| {
            e.ids.extend_from_slice(ids);
            e.assistant.extend(std::iter::repeat_n(train, ids.len()));
        };
        for m in messages {
            let train = m.role == Role::Assistant;
            push(&mut e, &[self.im_start], false);
            push(&mut e, &self.text_ids(&format!("{}\n", role_name(m.role)))?, false);
            push(&mut e, &self.text_ids(&format!("{CONTENT_PREFIX}{}", m.content))?, train);
            push(&mut e, &[self.im_end], train);
            push(&mut e, &newline, false);
            e.ends.push(e.ids.len());
        }
        if add_generation_prompt {
            push(&mut e, &[self.im_start], false);
            push(&mut e, &self.text_ids("assistant\n")?, false);
        }
        Ok(e)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tok
            .decode(ids, false)
            .map_err(|e| ModelError::Invalid(format!("cannot decode tokens: {e}")))
    }

    /// A generated message's text: its tokens decoded, without the [`CONTENT_PREFIX`] the
    /// template puts before every message's content.
    pub fn decode_reply(&self, ids: &[u32]) -> Result<String, ModelError> {
        let text = self.decode(ids)?;
        Ok(text.strip_prefix(self.content_prefix()).map(str::to_string).unwrap_or(text))
    }
}

/// A character-level `tokenizer.json` for tests: the three chat tokens at ids 0, 1, 2, then
/// one token per distinct character of `text`. Returns the JSON and the vocabulary size.
#[cfg(test)]
pub(crate) fn test_tokenizer(text: &str) -> (String, usize) {
    let mut chars: Vec<char> = text.chars().chain("\nsystemuserassistant".chars()).collect();
    chars.sort_unstable();
    chars.dedup();
    let specials = [END_OF_TEXT, IM_START, IM_END];
    let mut vocab = serde_json::Map::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert(s.to_string(), i.into());
    }
    for (i, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), (i + 3).into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    (serde_json::to_string_pretty(&json).unwrap(), chars.len() + 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> Message {
        Message { role, content: content.into() }
    }

    fn conversation() -> Vec<Message> {
        vec![
            msg(Role::System, "Be kind."),
            msg(Role::User, "Hi!"),
            msg(Role::Assistant, "Hello."),
            msg(Role::User, "2+2?"),
            msg(Role::Assistant, "4."),
        ]
    }

    fn jinja(messages: &[Message], add_generation_prompt: bool) -> String {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", JINJA).unwrap();
        let t = env.get_template("chat").unwrap();
        t.render(minijinja::context! { messages => messages, add_generation_prompt => add_generation_prompt }).unwrap()
    }

    #[test]
    fn render_equals_the_jinja_template() {
        let c = conversation();
        for add in [false, true] {
            for n in 0..=c.len() {
                assert_eq!(
                    render(&c[..n], add),
                    jinja(&c[..n], add),
                    "{n} messages, add_generation_prompt {add}"
                );
            }
        }
        assert_eq!(
            render(&c[1..3], true),
            "<|im_start|>user\n Hi!<|im_end|>\n<|im_start|>assistant\n Hello.<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    fn tokenizer() -> ChatTokenizer {
        let (json, vocab) = test_tokenizer("Be kind.Hi!Hello.2+2?4. ");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
        ChatTokenizer::from_file(&dir.path().join("tokenizer.json"), vocab).unwrap()
    }

    /// Token by token on a hand-written conversation: exactly the assistant contents and
    /// their closing `<|im_end|>` are marked.
    #[test]
    fn the_mask_covers_exactly_the_assistant_tokens() {
        let t = tokenizer();
        let c = vec![msg(Role::User, "Hi!"), msg(Role::Assistant, "Hello.")];
        let e = t.encode(&c, false).unwrap();
        let pieces: Vec<String> =
            e.ids.iter().map(|&i| t.tokenizer().id_to_token(i).unwrap()).collect();
        #[rustfmt::skip]
        let want: Vec<(&str, bool)> = vec![
            ("<|im_start|>", false), ("u", false), ("s", false), ("e", false), ("r", false), ("\n", false),
            (" ", false), ("H", false), ("i", false), ("!", false), ("<|im_end|>", false), ("\n", false),
            ("<|im_start|>", false), ("a", false), ("s", false), ("s", false), ("i", false), ("s", false), ("t", false), ("a", false), ("n", false), ("t", false), ("\n", false),
            (" ", true), ("H", true), ("e", true), ("l", true), ("l", true), ("o", true), (".", true), ("<|im_end|>", true), ("\n", false),
        ];
        let got: Vec<(&str, bool)> =
            pieces.iter().map(String::as_str).zip(e.assistant.iter().copied()).collect();
        assert_eq!(got, want);
        assert_eq!(e.ends, vec![12, 32]);
        // The tokens decode to the rendered text, and equal encoding the rendered string whole.
        assert_eq!(t.decode(&e.ids).unwrap(), render(&c, false));
        assert_eq!(
            t.tokenizer().encode(render(&c, false), false).unwrap().get_ids(),
            e.ids.as_slice()
        );
        let g = t.encode(&c[..1], true).unwrap();
        assert_eq!(t.decode(&g.ids).unwrap(), render(&c[..1], true));
        assert!(g.assistant.iter().all(|a| !a));
    }

    #[test]
    fn a_tokenizer_without_chat_tokens_is_explained() {
        let (json, _, _, _) = crate::model::shards::char_tokenizer("abc");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json).unwrap();
        let err = ChatTokenizer::from_file(&path, 4).err().unwrap().to_string();
        assert!(
            err.contains("`<|im_start|>`, `<|im_end|>`")
                && err.contains("special_tokens")
                && err.contains("pretrain"),
            "{err}"
        );
        // Present but outside the model's vocabulary also fails.
        let (json, _) = test_tokenizer("ab");
        std::fs::write(&path, json).unwrap();
        assert!(ChatTokenizer::from_file(&path, 2).is_err());
    }

    /// SmolLM2's template, as its tokenizer_config.json holds it.
    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn own(template: &str) -> ChatTokenizer {
        let cfg = serde_json::json!({"chat_template": template, "eos_token": IM_END, "bos_token": {"content": IM_START}, "pad_token": END_OF_TEXT});
        own_with(&cfg).unwrap()
    }

    fn own_with(cfg: &serde_json::Value) -> Result<ChatTokenizer, ModelError> {
        let (json, vocab) = test_tokenizer("Be kind.Hi!Hello.2+2?4. You are helpful");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
        std::fs::write(dir.path().join(export::TOKENIZER_CONFIG), cfg.to_string()).unwrap();
        ChatTokenizer::from_file(&dir.path().join("tokenizer.json"), vocab)
    }

    /// A tokenizer config whose template or turn-ending token hone cannot use is an error
    /// naming the file and the field.
    #[test]
    fn an_unusable_own_template_is_explained() {
        let err = |cfg: serde_json::Value| own_with(&cfg).err().expect("an error").to_string();
        let e = err(serde_json::json!({"chat_template": SMOL}));
        assert!(e.contains("tokenizer_config.json") && e.contains("`eos_token`: missing"), "{e}");
        let e = err(serde_json::json!({"chat_template": SMOL, "eos_token": "<|eot_id|>"}));
        assert!(e.contains("`eos_token`") && e.contains("\"<|eot_id|>\" is not a token"), "{e}");
        let e = err(
            serde_json::json!({"chat_template": "{% for m in messages %}", "eos_token": IM_END}),
        );
        assert!(e.contains("tokenizer_config.json") && e.contains("does not parse"), "{e}");
    }

    /// A model's own template is rendered as Jinja renders it and tokenized whole; the mask
    /// covers each assistant message from its content to the end of its turn.
    #[test]
    fn a_models_own_template_renders_and_masks_its_assistant_turns() {
        let t = own(SMOL);
        assert_ne!(
            t.render(&[msg(Role::User, "Hi!")], false).unwrap(),
            render(&[msg(Role::User, "Hi!")], false)
        );
        assert_eq!((t.im_start, t.im_end, t.end_of_text), (1, 2, 0));
        assert_eq!(t.content_prefix(), "");
        let c = vec![msg(Role::User, "Hi!"), msg(Role::Assistant, "Hello.")];
        let text = t.render(&c, false).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        );
        let e = t.encode(&c, false).unwrap();
        assert_eq!(t.decode(&e.ids).unwrap(), text);
        let marked: String = e
            .ids
            .iter()
            .zip(&e.assistant)
            .filter(|(_, a)| **a)
            .map(|(&i, _)| t.tokenizer().id_to_token(i).unwrap())
            .collect();
        assert_eq!(marked, "Hello.<|im_end|>\n");
        assert_eq!(e.ends.len(), 2);
        assert_eq!(*e.ends.last().unwrap(), e.ids.len());
        let g = t.encode(&c[..1], true).unwrap();
        assert!(t.decode(&g.ids).unwrap().ends_with("<|im_start|>assistant\n"));
        assert!(g.assistant.iter().all(|a| !a));
        // A template that does not render conversations prefix by prefix is refused.
        let odd = own("{% for m in messages|reverse %}{{ m['content'] }}{% endfor %}");
        let err = odd.encode(&c, false).unwrap_err().to_string();
        assert!(err.contains("cannot tell which tokens are the assistant's"), "{err}");
        assert!(err.contains("tokenizer_config.json"), "{err}");
        let raising = own("{{ raise_exception('only user and assistant roles') }}");
        let err = raising.encode(&c, false).unwrap_err().to_string();
        assert!(err.contains("only user and assistant roles"), "{err}");
    }
}
