//! Talking to a chat model: [`ChatModel`] loads a model directory whose
//! `tokenizer_config.json` has a `chat_template` (what `sft` writes) and answers a
//! conversation in ChatML ([`crate::model::chat_template`]), streaming the reply and stopping at
//! `<|im_end|>`. `hone chat` and the `evaluate` stage use it.
//!
//! A conversation longer than the context window loses its oldest exchanges (a system
//! message is kept) so that the prompt leaves room for the reply: a quarter of the window, or
//! `max_new_tokens` if that is smaller. A last message that alone leaves less room is kept
//! whole if it fits the window at all. The reply may run past the window; the sampler then
//! slides it (see [`super::sample`]).

use std::path::Path;

use candle_core::DType;

use super::decoder::Decoder;
use super::export::{self, GenerationConfig};
use super::sample::{Overrides, SampleOptions, generate_streamed};
use super::{GptConfig, ModelError, Result};
use crate::data::formats::{Message, Role};
use crate::model::chat_template::ChatTokenizer;

/// `tokenizer_config.json`, where HuggingFace keeps the chat template.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

pub struct ChatModel {
    /// The model's weights, for generation.
    pub decoder: Decoder,
    pub config: GptConfig,
    pub generation: GenerationConfig,
    pub tok: ChatTokenizer,
    /// Whether the model was fine-tuned for chat (its tokenizer config has a template).
    pub is_chat: bool,
}

/// What [`ChatModel::reply`] produced.
#[derive(Clone, Debug)]
pub struct Reply {
    pub text: String,
    pub tokens: usize,
    pub prompt_tokens: usize,
    /// Oldest messages left out to fit the context window.
    pub dropped_messages: usize,
}

impl ChatModel {
    /// Loads a model directory (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn load(dir: &Path) -> Result<ChatModel> {
        let loaded = export::load(dir, DType::F32)?;
        let tok_path = dir.join(export::TOKENIZER);
        if !tok_path.exists() {
            return Err(ModelError::format(
                dir,
                format!(
                    "no `{}` beside the model: hone needs it to turn text into tokens",
                    export::TOKENIZER
                ),
            ));
        }
        let tok = ChatTokenizer::from_file(&tok_path, loaded.config.vocab_size)?;
        let cfg_path = dir.join(TOKENIZER_CONFIG);
        let is_chat = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| ModelError::format(&cfg_path, e.to_string()))?;
                v.get("chat_template").is_some_and(|t| t.is_string())
            }
            Err(_) => false,
        };
        let decoder = Decoder::from_store(&loaded.config, &loaded.params)?;
        Ok(ChatModel {
            decoder,
            config: loaded.config,
            generation: loaded.generation,
            tok,
            is_chat,
        })
    }

    /// Sampling options from `generation_config.json`, stopping at `<|im_end|>`.
    pub fn options(&self, seed: u64) -> SampleOptions {
        SampleOptions {
            stop_at: Some(self.tok.im_end),
            ..SampleOptions::from_config(&self.generation, seed)
        }
    }

    /// [`ChatModel::options`] with what a user overrides (`hone chat --temperature 0`), checked.
    pub fn options_with(&self, seed: u64, over: &Overrides) -> Result<SampleOptions> {
        over.apply(self.options(seed))
    }

    /// The assistant's next message after `messages`, streamed to `on_text` as it is sampled.
    pub fn reply(
        &self,
        messages: &[Message],
        o: &SampleOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Reply> {
        let block = self.config.block_size;
        let room = o.max_new_tokens.clamp(1, (block / 4).max(1));
        let system = usize::from(messages.first().is_some_and(|m| m.role == Role::System));
        let mut dropped = 0;
        let ids = loop {
            let kept: Vec<Message> =
                messages[..system].iter().chain(&messages[system + dropped..]).cloned().collect();
            let enc = self.tok.encode(&kept, true)?;
            if enc.ids.len() + room <= block {
                break enc.ids;
            }
            if system + dropped + 1 >= messages.len() {
                // Nothing left to drop: a long last message may use the room kept for the
                // reply (the sampler slides the window), as long as the prompt itself fits.
                if enc.ids.len() < block {
                    break enc.ids;
                }
                return Err(ModelError::Invalid(format!(
                    "the last message alone takes {} tokens, but the model's context window is {block}: write a shorter message",
                    enc.ids.len()
                )));
            }
            // Drop whole exchanges: what is kept starts with a user message.
            dropped += 1;
            while system + dropped + 1 < messages.len()
                && messages[system + dropped].role != Role::User
            {
                dropped += 1;
            }
        };
        let o = SampleOptions { stop_at: Some(self.tok.im_end), ..o.clone() };
        let mut stream = self.tok.tokenizer().decode_stream(false);
        let mut text = String::new();
        // The end-of-text token also ends a reply (a base model may produce it).
        let stops = [self.tok.end_of_text, self.tok.im_start];
        // The reply starts with the template's content prefix: it is not part of the message.
        let mut prefix = self.tok.content_prefix();
        let new = generate_streamed(
            &self.decoder,
            &ids,
            &o,
            &stops,
            |t| stream.step(t),
            |piece| {
                let (kept, rest) = strip_partly(piece, prefix);
                prefix = rest;
                text.push_str(kept);
                if !kept.is_empty() {
                    on_text(kept);
                }
            },
        )?;
        Ok(Reply { text, tokens: new.len(), prompt_tokens: ids.len(), dropped_messages: dropped })
    }
}

/// `piece` without what it starts with of `prefix`, and what of `prefix` is still to strip
/// from the pieces after it (`""` once a piece differs from it or it is used up).
fn strip_partly<'a, 'p>(piece: &'a str, prefix: &'p str) -> (&'a str, &'p str) {
    if let Some(rest) = piece.strip_prefix(prefix) {
        (rest, "")
    } else if let Some(rest) = prefix.strip_prefix(piece) {
        ("", rest)
    } else {
        (piece, "")
    }
}

/// A multi-turn conversation for an interactive chat: `/system` and `/reset` act on it.
#[derive(Default, Clone, Debug)]
pub struct Session {
    pub system: Option<String>,
    pub history: Vec<Message>,
}

impl Session {
    /// The messages to send: the system message (if any), then the history.
    pub fn messages(&self) -> Vec<Message> {
        let sys = self.system.iter().map(|s| Message { role: Role::System, content: s.clone() });
        sys.chain(self.history.iter().cloned()).collect()
    }

    /// Sends `user`, streams the reply, and keeps both in the history.
    pub fn say(
        &mut self,
        model: &ChatModel,
        user: &str,
        o: &SampleOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Reply> {
        self.history.push(Message { role: Role::User, content: user.to_string() });
        match model.reply(&self.messages(), o, on_text) {
            Ok(r) => {
                self.history.push(Message { role: Role::Assistant, content: r.text.clone() });
                Ok(r)
            }
            Err(e) => {
                self.history.pop();
                Err(e)
            }
        }
    }

    pub fn reset(&mut self) {
        self.history.clear();
    }
}

/// The interactive loop of `hone chat`: reads lines from `input`, streams replies to `out`.
/// `/reset` forgets the conversation, `/system TEXT` sets the system message (and starts
/// over), `/quit` or end of input ends. Each turn samples with its own seed (`o.seed` plus
/// the turn number), so a scripted session is reproducible.
pub fn repl(
    m: &ChatModel,
    o: &SampleOptions,
    system: Option<String>,
    input: impl std::io::BufRead,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let io = |e: std::io::Error| ModelError::Invalid(format!("terminal: {e}"));
    let mut session = Session { system, history: Vec::new() };
    let mut turn = 0u64;
    writeln!(out, "Chatting with a {}-token context. /system TEXT sets the system message, /reset starts over, /quit ends.", m.config.block_size).map_err(io)?;
    let prompt = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        write!(out, "> ")?;
        out.flush()
    };
    prompt(out).map_err(io)?;
    for line in input.lines() {
        let line = line.map_err(io)?;
        let text = line.trim();
        if text == "/quit" || text == "/exit" {
            break;
        } else if text == "/reset" {
            session.reset();
            writeln!(out, "(conversation reset)").map_err(io)?;
        } else if let Some(sys) = text.strip_prefix("/system") {
            let sys = sys.trim();
            session.system = (!sys.is_empty()).then(|| sys.to_string());
            session.reset();
            writeln!(
                out,
                "(system message {}; conversation reset)",
                if sys.is_empty() { "cleared" } else { "set" }
            )
            .map_err(io)?;
        } else if text.starts_with('/') {
            writeln!(out, "(unknown command {text}: use /system TEXT, /reset or /quit)")
                .map_err(io)?;
        } else if !text.is_empty() {
            turn += 1;
            let o = SampleOptions { seed: o.seed.wrapping_add(turn), ..o.clone() };
            let mut failed = None;
            let r = session.say(m, text, &o, |piece| {
                if let Err(e) = write!(out, "{piece}").and_then(|()| out.flush()) {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed {
                return Err(io(e));
            }
            match r {
                Ok(r) if r.dropped_messages > 0 => writeln!(out, "\n(left out the oldest {} message(s): the conversation no longer fits the context)", r.dropped_messages).map_err(io)?,
                Ok(_) => writeln!(out).map_err(io)?,
                Err(e) => writeln!(out, "(error: {e})").map_err(io)?,
            }
        }
        prompt(out).map_err(io)?;
    }
    writeln!(out).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::strip_partly;

    /// The prefix goes from the start of the stream, whole or across pieces, and only there.
    #[test]
    fn the_prefix_is_stripped_from_the_streams_start_only() {
        assert_eq!(strip_partly(" Finn", " "), ("Finn", ""));
        assert_eq!(strip_partly(" ", " "), ("", ""));
        assert_eq!(strip_partly("Finn", " "), ("Finn", ""), "no prefix: the piece as it is");
        assert_eq!(strip_partly(" a", " a b"), ("", " b"), "a piece shorter than the prefix");
        assert_eq!(strip_partly(" b!", " b"), ("!", ""));
        assert_eq!(strip_partly(" x", ""), (" x", ""), "once stripped, nothing more");
    }
}
