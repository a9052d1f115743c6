//! `tokenizer`: trains a tokenizer on a corpus with HuggingFace `tokenizers`, then encodes the
//! corpus into flat token shards for pretraining.
//!
//! ```yaml
//! tokenizer:
//!   uses: tokenizer
//!   inputs: { corpus: corpus }          # an `ingest` stage
//!   with:
//!     kind: bpe                         # or `char`
//!     vocab_size: 512
//!     min_frequency: 2
//!     special_tokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
//! ```
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `kind` | `bpe` | `bpe`: byte-level BPE (GPT-2 style: byte alphabet, GPT-2 split pattern, no normaliser). `char`: one token per distinct character (nanoGPT's shakespeare_char), plus 256 byte-fallback tokens so that text with unseen characters still round-trips. |
//! | `vocab_size` | bpe: 512; char: no cap | bpe: the size to train up to, special tokens and the 256 byte symbols included. char: a cap; the most frequent characters are kept, the rest go through byte fallback. |
//! | `min_frequency` | bpe: 2; char: 1 | bpe: the fewest occurrences a pair needs to be merged. char: the fewest a character needs for its own token. |
//! | `split_digits` | `false` | bpe: every digit its own pre-token (HF's `Digits` pre-tokenizer before the byte level, as Llama and GPT-4 split numbers), so no token spans two digits. Off by default: on the default pipeline it raised arithmetic accuracy and lowered the rest more (docs/benchmarks.md). |
//! | `special_tokens` | the three chat tokens | reserved tokens, ids 0, 1, ... in this order; must include `<|endoftext|>`, `<|im_start|>` and `<|im_end|>`. |
//!
//! **Input** (an `ingest` corpus of any record format, read with [`Corpus`]): a record's
//! documents are its `text`; or the `content` of each of its `messages`; or its `prompt`; or
//! its `prompt`, `chosen` and `rejected`, each a document of its own. The tokenizer is trained
//! on the train split only.
//!
//! **Output** (this layout is what the pretraining stage reads):
//! - `tokenizer.json`: loads unchanged with `tokenizers.Tokenizer.from_file` (Python or Rust);
//!   `decode(encode(x)) == x` for any UTF-8 `x` when special tokens are not skipped.
//! - `train.bin`, `val.bin`: flat little-endian token ids, `u16` when the vocabulary has at
//!   most 65,536 tokens, else `u32`; every document followed by the `<|endoftext|>` id.
//! - `meta.json`: [`ShardMeta`] (read back by [`shards::TokenData`]): `{"kind", "vocab_size", "dtype", "train_tokens",
//!   "val_tokens", "eot_id", "special_tokens": {token: id}}`.
//!
//! Outputs are byte-identical for the same corpus and params: `tokenizers`' BPE trainer picks
//! the most frequent pair with ties broken by pair ids and serialises vocab and merges by id
//! (tested below), and the char vocabulary is sorted.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer as HfTokenizer};

use crate::data::corpus::{Corpus, Records, Split};
use crate::model::shards::{self, Dtype, ShardMeta, TokenizerKind as Kind};
use crate::ports::{CORPUS, TOKENIZER};

pub struct Tokenizer;

pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
/// Always reserved: pretraining separates documents with the first, chat uses the others.
const REQUIRED_SPECIALS: [&str; 3] = [END_OF_TEXT, IM_START, IM_END];

const DEFAULT_BPE_VOCAB: usize = 512;
const DEFAULT_BPE_MIN_FREQUENCY: u64 = 2;
/// Byte symbols (bpe) or byte-fallback tokens (char) every vocabulary holds.
const BYTE_TOKENS: usize = 256;
/// Texts per `encode_batch` call: large enough to keep every core busy.
const ENCODE_BATCH_BYTES: usize = 1 << 20;
const PROGRESS_EVERY: u64 = 2_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_frequency: Option<u64>,
    #[serde(default = "defaults::special_tokens")]
    pub special_tokens: Vec<String>,
    /// bpe: every digit its own pre-token (as Llama's and GPT-4's tokenizers split numbers),
    /// so no merge spans two digits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split_digits: bool,
}

impl Stage for Tokenizer {
    type Params = Params;
    const KIND: &'static str = "tokenizer";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "train a byte-level BPE (or char) tokenizer on a corpus and encode it into token shards";
    const INPUTS: Inputs = Inputs::Fixed(&[Port::required("corpus", CORPUS)]);
    const OUTPUTS: &'static [Port] = &[Port::required("tokenizer", TOKENIZER)];

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.split_digits && p.kind == Kind::Char {
            problems.push(
                ParamProblem::at(&["split_digits"], "`split_digits` is for `kind: bpe`")
                    .help("a char tokenizer already gives every digit its own token"),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &p.special_tokens {
            if t.is_empty() {
                problems.push(
                    ParamProblem::at(&["special_tokens"], "a special token is empty")
                        .help("remove it"),
                );
            } else if !seen.insert(t.as_str()) {
                problems.push(
                    ParamProblem::at(&["special_tokens"], format!("`{t}` is listed twice"))
                        .help("list it once"),
                );
            }
        }
        for required in REQUIRED_SPECIALS {
            if !p.special_tokens.iter().any(|t| t == required) {
                problems.push(
                    ParamProblem::at(&["special_tokens"], format!("`{required}` is missing"))
                        .help("the chat tokens <|endoftext|>, <|im_start|> and <|im_end|> are always reserved; add it to the list"),
                );
            }
        }
        let floor = BYTE_TOKENS + p.special_tokens.len();
        if let Some(v) = p.vocab_size {
            if v < floor {
                problems.push(
                    ParamProblem::at(
                        &["vocab_size"],
                        format!(
                            "vocab_size {v} cannot hold the 256 byte tokens and {} special tokens",
                            p.special_tokens.len()
                        ),
                    )
                    .help(format!("use at least {floor}; 512 suits a tiny model")),
                );
            } else if v > u32::MAX as usize {
                problems.push(ParamProblem::at(
                    &["vocab_size"],
                    format!("vocab_size {v} does not fit 32-bit ids"),
                ));
            }
        }
        problems
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        let corpus = cx.required_input("corpus")?;
        let progress = |done: u64, total: Option<u64>, what: &str| cx.progress(done, total, what);
        let cancelled = || cx.is_cancelled();
        let made = write_artifact(
            p,
            corpus,
            cx.out_dir,
            &Hooks { progress: &progress, cancelled: &cancelled },
        )?;
        cx.metric("vocab_size", made.meta.vocab_size);
        cx.metric("train_tokens", made.meta.train_tokens);
        cx.metric("val_tokens", made.meta.val_tokens);
        cx.metric("train_documents", made.train.documents);
        cx.metric("train_seconds", (made.train_seconds * 1000.0).round() / 1000.0);
        cx.metric("encode_seconds", (made.encode_seconds * 1000.0).round() / 1000.0);
        if made.train.tokens > made.train.documents {
            // Text bytes per token (separators excluded): how much the tokenizer compresses.
            let content = made.train.tokens - made.train.documents;
            cx.metric(
                "bytes_per_token",
                (made.train.bytes as f64 / content as f64 * 1000.0).round() / 1000.0,
            );
        }
        Ok(())
    }
}

/// How the long loops report progress and learn that the run is being stopped.
pub(crate) struct Hooks<'a> {
    pub progress: &'a (dyn Fn(u64, Option<u64>, &str) + Sync),
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

pub(crate) struct Made {
    pub meta: ShardMeta,
    pub train: SplitStats,
    /// Wall seconds training, and encoding both splits (metrics, not in the artifact).
    pub train_seconds: f64,
    pub encode_seconds: f64,
}

/// Trains on `corpus` and writes the whole artifact into `out`.
pub(crate) fn write_artifact(
    p: &Params,
    corpus: &Path,
    out: &Path,
    hooks: &Hooks,
) -> Result<Made, StageError> {
    let corpus = Corpus::open(corpus, "corpus")?;
    let started = std::time::Instant::now();
    let trained = match p.kind {
        Kind::Bpe => train_bpe(p, &corpus, hooks)?,
        Kind::Char => train_char(p, &corpus, hooks)?,
    };
    let json_path = out.join("tokenizer.json");
    trained
        .save(&json_path, true)
        .map_err(|e| StageError::msg(format!("cannot write tokenizer.json: {e}")))?;
    let train_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    // Encode with what was written, so the shards are exactly what the file produces.
    let tok = HfTokenizer::from_file(&json_path).map_err(|e| {
        StageError::msg(format!("the tokenizer.json just written does not load: {e}"))
    })?;

    let vocab_size = tok.get_vocab_size(true);
    let special_tokens: BTreeMap<String, u32> = p
        .special_tokens
        .iter()
        .map(|t| {
            let id = tok
                .token_to_id(t)
                .ok_or_else(|| StageError::msg(format!("special token `{t}` has no id")))?;
            Ok((t.clone(), id))
        })
        .collect::<Result<_, StageError>>()?;
    let eot_id = special_tokens[END_OF_TEXT];
    let dtype = Dtype::for_vocab(vocab_size);

    let total = corpus.count(Split::Train).zip(corpus.count(Split::Val)).map(|(t, v)| t + v);
    let mut progress = Progress { hooks, total, done: 0 };
    let train_stats = encode_split(
        &tok,
        &corpus,
        Split::Train,
        &out.join(shards::TRAIN),
        dtype,
        eot_id,
        &mut progress,
    )?;
    let val_stats = encode_split(
        &tok,
        &corpus,
        Split::Val,
        &out.join(shards::VAL),
        dtype,
        eot_id,
        &mut progress,
    )?;

    let meta = ShardMeta {
        kind: p.kind,
        vocab_size,
        dtype,
        train_tokens: train_stats.tokens,
        val_tokens: val_stats.tokens,
        eot_id,
        special_tokens,
    };
    let mut json = serde_json::to_string_pretty(&meta).expect("meta serialises");
    json.push('\n');
    std::fs::write(out.join(shards::META), json)
        .map_err(StageError::io("cannot write meta.json"))?;
    let encode_seconds = started.elapsed().as_secs_f64();
    Ok(Made { meta, train: train_stats, train_seconds, encode_seconds })
}

/// Records encoded, out of the corpus's records.
struct Progress<'a> {
    hooks: &'a Hooks<'a>,
    total: Option<u64>,
    done: u64,
}

impl Progress<'_> {
    fn record(&mut self) {
        self.done += 1;
        if self.done.is_multiple_of(PROGRESS_EVERY) {
            (self.hooks.progress)(self.done, self.total, "encoding");
        }
    }
}

/// The documents of a corpus split, streamed: each record's texts in order
/// ([`crate::data::formats::Record::into_texts`]).
struct Texts {
    records: Records,
    pending: VecDeque<String>,
}

impl Texts {
    fn open(corpus: &Corpus, split: Split) -> Result<Texts, StageError> {
        Ok(Texts { records: corpus.records(split)?, pending: VecDeque::new() })
    }

    /// Records read so far.
    fn read(&self) -> u64 {
        self.records.read
    }
}

impl Iterator for Texts {
    type Item = Result<String, StageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(t) = self.pending.pop_front() {
                return Some(Ok(t));
            }
            match self.records.next()? {
                Ok((_, record)) => self.pending.extend(record.into_texts()),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Runs `f` over the train texts, stopping at the first error or cancellation.
fn with_texts<R>(
    corpus: &Corpus,
    hooks: &Hooks,
    f: impl FnOnce(&mut (dyn Iterator<Item = String> + Send)) -> Result<R, StageError>,
) -> Result<R, StageError> {
    let failure: Mutex<Option<StageError>> = Mutex::new(None);
    let total = corpus.count(Split::Train);
    let mut texts = Texts::open(corpus, Split::Train)?;
    let mut reported = 0;
    let mut iter = std::iter::from_fn(|| {
        if (hooks.cancelled)() {
            *failure.lock().unwrap() = Some(StageError::Cancelled);
            return None;
        }
        match texts.next()? {
            Ok(t) => {
                if texts.read() >= reported + PROGRESS_EVERY {
                    reported = texts.read();
                    (hooks.progress)(reported, total, "training");
                }
                Some(t)
            }
            Err(e) => {
                *failure.lock().unwrap() = Some(e);
                None
            }
        }
    });
    let result = f(&mut iter);
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    result
}

fn special_added_tokens(p: &Params) -> Vec<AddedToken> {
    p.special_tokens.iter().map(|t| AddedToken::from(t.clone(), true)).collect()
}

fn train_bpe(p: &Params, corpus: &Corpus, hooks: &Hooks) -> Result<HfTokenizer, StageError> {
    let mut tok = HfTokenizer::new(BPE::default());
    // GPT-2's byte level, but without the prefix space so that decode(encode(x)) == x; with
    // `split_digits`, digits are cut apart first (a pre-tokenizer sequence, as HF writes it).
    let byte_level = ByteLevel::new(false, true, true);
    if p.split_digits {
        tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ]))));
    } else {
        tok.with_pre_tokenizer(Some(byte_level));
    }
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(p.vocab_size.unwrap_or(DEFAULT_BPE_VOCAB))
        .min_frequency(p.min_frequency.unwrap_or(DEFAULT_BPE_MIN_FREQUENCY))
        .show_progress(false)
        .special_tokens(special_added_tokens(p))
        // Every byte gets a symbol, so any text encodes, seen in training or not.
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut empty = true;
    with_texts(corpus, hooks, |texts| {
        let texts = texts.inspect(|_| empty = false);
        tok.train(&mut trainer, texts)
            .map_err(|e| StageError::msg(format!("BPE training failed: {e}")))?;
        Ok(())
    })?;
    if empty {
        return Err(no_text());
    }
    Ok(tok)
}

fn no_text() -> StageError {
    StageError::msg(format!(
        "the corpus's {} has no text to train on; check the ingest stage's filters and source",
        Split::Train.file()
    ))
}

fn train_char(p: &Params, corpus: &Corpus, hooks: &Hooks) -> Result<HfTokenizer, StageError> {
    let mut counts: BTreeMap<char, u64> = BTreeMap::new();
    with_texts(corpus, hooks, |texts| {
        for t in texts {
            for c in t.chars() {
                *counts.entry(c).or_default() += 1;
            }
        }
        Ok(())
    })?;
    if counts.is_empty() {
        return Err(no_text());
    }
    let min = p.min_frequency.unwrap_or(1);
    let mut chars: Vec<(char, u64)> = counts.into_iter().filter(|&(_, n)| n >= min).collect();
    if let Some(cap) = p.vocab_size {
        // The most frequent characters, ties by code point; the rest fall back to bytes.
        chars.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        chars.truncate(cap - BYTE_TOKENS - p.special_tokens.len());
    }
    chars.sort_by_key(|&(c, _)| c);

    // Ids: special tokens, then the characters in code-point order, then the byte tokens.
    let mut names: Vec<String> = p.special_tokens.clone();
    names.extend(chars.iter().map(|(c, _)| c.to_string()));
    names.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let vocab: Vocab = names.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
    // No merges and no pre-tokenizer: every character is looked up on its own.
    let model = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .byte_fallback(true)
        .build()
        .map_err(|e| StageError::msg(format!("cannot build the char model: {e}")))?;
    let mut tok = HfTokenizer::new(model);
    tok.with_decoder(Some(DecoderWrapper::Sequence(Sequence::new(vec![
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]))));
    tok.add_special_tokens(special_added_tokens(p))
        .map_err(|e| StageError::msg(format!("cannot add the special tokens: {e}")))?;
    Ok(tok)
}

pub(crate) struct SplitStats {
    documents: u64,
    tokens: u64,
    bytes: u64,
}

fn encode_split(
    tok: &HfTokenizer,
    corpus: &Corpus,
    split: Split,
    dst: &Path,
    dtype: Dtype,
    eot: u32,
    progress: &mut Progress<'_>,
) -> Result<SplitStats, StageError> {
    let name = dst.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut out =
        BufWriter::new(File::create(dst).map_err(StageError::io(format!("cannot create {name}")))?);
    let mut stats = SplitStats { documents: 0, tokens: 0, bytes: 0 };
    let mut texts = Texts::open(corpus, split)?;
    let mut batch: Vec<String> = Vec::new();
    let mut batch_bytes = 0;
    let mut records = 0;
    let mut done = false;
    while !done {
        match texts.next().transpose()? {
            Some(t) => {
                batch_bytes += t.len();
                batch.push(t);
            }
            None => done = true,
        }
        while texts.read() > records {
            records += 1;
            progress.record();
        }
        if !batch.is_empty() && (done || batch_bytes >= ENCODE_BATCH_BYTES) {
            if (progress.hooks.cancelled)() {
                return Err(StageError::Cancelled);
            }
            let docs = std::mem::take(&mut batch);
            stats.bytes += batch_bytes as u64;
            batch_bytes = 0;
            let encodings = tok
                .encode_batch_fast(docs, false)
                .map_err(|e| StageError::msg(format!("encoding {name} failed: {e}")))?;
            for enc in encodings {
                for &id in enc.get_ids().iter().chain(std::iter::once(&eot)) {
                    write_id(&mut out, id, dtype)
                        .map_err(StageError::io(format!("cannot write {name}")))?;
                }
                stats.tokens += enc.get_ids().len() as u64 + 1;
                stats.documents += 1;
            }
        }
    }
    out.flush().map_err(StageError::io(format!("cannot write {name}")))?;
    Ok(stats)
}

fn write_id(out: &mut impl Write, id: u32, dtype: Dtype) -> std::io::Result<()> {
    match dtype {
        Dtype::U16 => out.write_all(&(id as u16).to_le_bytes()),
        Dtype::U32 => out.write_all(&id.to_le_bytes()),
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    use super::REQUIRED_SPECIALS;

    pub fn special_tokens() -> Vec<String> {
        REQUIRED_SPECIALS.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::model::shards::read_shard;
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::support::{self, quiet};
    use crate::tinyworld::rng::Rng;

    fn no_progress(_: u64, _: Option<u64>, _: &str) {}
    fn never() -> bool {
        false
    }
    const QUIET: Hooks<'static> = Hooks { progress: &no_progress, cancelled: &never };

    fn params(kind: Kind, vocab_size: Option<usize>) -> Params {
        Params {
            kind,
            vocab_size,
            min_frequency: None,
            special_tokens: defaults::special_tokens(),
            split_digits: false,
        }
    }

    fn write_corpus(dir: &Path, train: &[Value], val: &[Value]) {
        let lines =
            |records: &[Value]| records.iter().map(|r| format!("{r}\n")).collect::<String>();
        std::fs::write(dir.join("train.jsonl"), lines(train)).unwrap();
        std::fs::write(dir.join("val.jsonl"), lines(val)).unwrap();
        let meta = json!({ "format": "text", "train": train.len(), "val": val.len() });
        std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    }

    fn texts(docs: &[&str]) -> Vec<Value> {
        docs.iter().map(|t| json!({ "text": t })).collect()
    }

    /// A small English corpus (tinyworld) with some scripts and symbols mixed in.
    fn sample_docs() -> Vec<String> {
        let mut docs: Vec<String> = crate::tinyworld::dataset("pretrain", 1).unwrap()[..400]
            .iter()
            .map(|d| d["text"].as_str().unwrap().to_string())
            .collect();
        docs.extend(
            [
                "Grüße aus Köln.",
                "日本語のテキストです。",
                "emoji 😀👍🏽 and 👨‍👩‍👧 family",
                "e\u{301}\u{302} combining",
                "tab\tand\r\nnewlines\n\n",
            ]
            .map(String::from),
        );
        docs
    }

    /// Builds an artifact from `train`/`val` text docs; returns (corpus dir, out dir, result).
    fn build(
        p: &Params,
        train: &[String],
        val: &[String],
    ) -> (tempfile::TempDir, tempfile::TempDir, Made) {
        let corpus = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let records = |d: &[String]| d.iter().map(|t| json!({ "text": t })).collect::<Vec<_>>();
        write_corpus(corpus.path(), &records(train), &records(val));
        let made = write_artifact(p, corpus.path(), out.path(), &QUIET).unwrap();
        (corpus, out, made)
    }

    fn load(out: &Path) -> HfTokenizer {
        HfTokenizer::from_file(out.join("tokenizer.json")).unwrap()
    }

    /// Random strings over many scripts, control characters, emoji with joiners and
    /// modifiers, combining marks, whitespace runs and special tokens.
    fn arbitrary_strings(n: usize) -> Vec<String> {
        const RANGES: &[(u32, u32)] = &[
            (0x20, 0x7e),
            (0x00, 0x1f),
            (0xa0, 0x24f),
            (0x300, 0x36f),
            (0x4e00, 0x9fff),
            (0x3040, 0x30ff),
            (0xac00, 0xd7a3),
            (0x600, 0x6ff),
            (0x900, 0x97f),
            (0x1f300, 0x1f64f),
            (0x1f3fb, 0x1f3ff),
            (0x200d, 0x200d),
            (0xfe0f, 0xfe0f),
            (0x10000, 0x10ffff),
        ];
        let mut r = Rng::new(42);
        let mut out: Vec<String> = vec![
            String::new(),
            " ".into(),
            "  leading and trailing  ".into(),
            "\u{0}".into(),
            "👨‍👩‍👧‍👦".into(),
            "e\u{301}".into(),
            "<|endoftext|>".into(),
            "a<|im_start|>user\nhi<|im_end|>b".into(),
            "<0x41> is not a byte token".into(),
        ];
        while out.len() < n {
            let len = r.below(40);
            let mut s = String::new();
            for _ in 0..len {
                match r.below(20) {
                    0 => s.push_str(["<|endoftext|>", "<|im_start|>", "<|im_end|>"][r.below(3)]),
                    1 => s.push_str(["   ", "\n\n", "\t", "\r\n"][r.below(4)]),
                    _ => {
                        let (lo, hi) = RANGES[r.below(RANGES.len())];
                        if let Some(c) = char::from_u32(lo + r.below((hi - lo + 1) as usize) as u32)
                        {
                            s.push(c);
                        }
                    }
                }
            }
            out.push(s);
        }
        out
    }

    #[test]
    fn decode_encode_round_trips_arbitrary_utf8_for_both_kinds() {
        let docs = sample_docs();
        for kind in [Kind::Bpe, Kind::Char] {
            let (_c, out, _) = build(&params(kind, None), &docs, &docs[..5]);
            let tok = load(out.path());
            for s in arbitrary_strings(400) {
                let ids = tok.encode(s.as_str(), false).unwrap().get_ids().to_vec();
                let back = tok.decode(&ids, false).unwrap();
                assert_eq!(back, s, "{kind:?} does not round-trip {s:?} (ids {ids:?})");
            }
        }
    }

    #[test]
    fn bpe_learns_merges_and_char_falls_back_to_bytes() {
        let docs = sample_docs();
        let (_c, out, made) = build(&params(Kind::Bpe, Some(400)), &docs, &docs[..5]);
        assert_eq!(made.meta.vocab_size, 400, "the corpus has enough pairs to fill the vocabulary");
        let content_tokens = made.train.tokens - made.train.documents;
        let ratio = made.train.bytes as f64 / content_tokens as f64;
        assert!(ratio > 1.6, "BPE should compress English text; {ratio:.2} bytes per token");
        let tok = load(out.path());
        assert_eq!(
            tok.encode(" the", false).unwrap().get_ids().len(),
            1,
            "` the` should be one merged token"
        );

        let ascii: Vec<String> = vec!["abc abc".into()];
        let (_c, out, made) = build(&params(Kind::Char, None), &ascii, &ascii);
        // 3 special tokens, 4 characters (space, a, b, c), 256 byte tokens.
        assert_eq!(made.meta.vocab_size, 3 + 4 + 256);
        let tok = load(out.path());
        assert_eq!(
            tok.encode("cab", false).unwrap().get_ids(),
            &[3 + 3, 3 + 1, 3 + 2],
            "chars in code-point order after the specials"
        );
        let tokens = tok.encode("😀", false).unwrap().get_tokens().to_vec();
        assert_eq!(tokens, ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]);
    }

    /// `split_digits`: numbers are cut into digits before BPE, so no token spans two, and
    /// text still round-trips; `tokenizer.json` carries the pre-tokenizer for HF to load.
    #[test]
    fn split_digits_gives_every_digit_its_own_token() {
        let docs = sample_docs();
        let p = Params { split_digits: true, ..params(Kind::Bpe, Some(400)) };
        let (_c, out, _) = build(&p, &docs, &docs[..5]);
        let tok = load(out.path());
        let enc = tok.encode("7 plus 15 is 22, not 2026.", false).unwrap();
        for t in enc.get_tokens() {
            let text = tok.decode(&[tok.token_to_id(t).unwrap()], false).unwrap();
            assert!(
                !(text.chars().any(|c| c.is_ascii_digit()) && text.chars().count() > 1),
                "{t:?} ({text:?}) holds a digit beside something else"
            );
        }
        let ids = tok.encode("1234567", false).unwrap().get_ids().to_vec();
        assert_eq!(ids.len(), 7);
        assert_eq!(tok.decode(&ids, false).unwrap(), "1234567");
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("tokenizer.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            json["pre_tokenizer"]["pretokenizers"][0],
            json!({"type": "Digits", "individual_digits": true})
        );
        // Without it, GPT-2's split keeps a number whole and BPE merges its digits.
        let (_c, out, _) = build(&params(Kind::Bpe, Some(400)), &docs, &docs[..5]);
        let plain = load(out.path()).encode("7 plus 15 is 22, not 2026.", false).unwrap();
        assert!(plain.get_ids().len() < enc.get_ids().len());
    }

    #[test]
    fn char_vocab_size_caps_and_min_frequency_drops_rare_characters() {
        let docs: Vec<String> = vec!["aaaa bbb cc d".into()];
        let mut p = params(Kind::Char, Some(3 + 256 + 2));
        let (_c, out, made) = build(&p, &docs, &docs);
        assert_eq!(made.meta.vocab_size, 3 + 256 + 2);
        let vocab = load(out.path()).get_vocab(true);
        assert!(
            vocab.contains_key("a") && vocab.contains_key(" ") && !vocab.contains_key("b"),
            "keeps the two most frequent"
        );
        p.vocab_size = None;
        p.min_frequency = Some(3);
        let (_c, out, _) = build(&p, &docs, &docs);
        let vocab = load(out.path()).get_vocab(true);
        assert!(vocab.contains_key("b") && !vocab.contains_key("c") && !vocab.contains_key("d"));
        let tok = load(out.path());
        assert_eq!(
            tok.decode(tok.encode("cd", false).unwrap().get_ids(), false).unwrap(),
            "cd",
            "rare chars go through bytes"
        );
    }

    #[test]
    fn tokenizer_json_loads_from_the_file_alone() {
        let docs = sample_docs();
        for kind in [Kind::Bpe, Kind::Char] {
            let (_c, out, made) = build(&params(kind, None), &docs, &docs[..5]);
            let alone = tempfile::tempdir().unwrap();
            std::fs::copy(out.path().join("tokenizer.json"), alone.path().join("tokenizer.json"))
                .unwrap();
            drop(out);
            let tok = HfTokenizer::from_file(alone.path().join("tokenizer.json")).unwrap();
            assert_eq!(tok.get_vocab_size(true), made.meta.vocab_size);
            for (i, special) in REQUIRED_SPECIALS.iter().enumerate() {
                assert_eq!(tok.token_to_id(special), Some(i as u32), "{kind:?}: {special}");
                assert_eq!(made.meta.special_tokens[*special], i as u32);
            }
            assert_eq!(made.meta.eot_id, 0);
            let json: Value = serde_json::from_slice(
                &std::fs::read(alone.path().join("tokenizer.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(json["model"]["type"], "BPE");
            let added: Vec<&str> = json["added_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["content"].as_str().unwrap())
                .collect();
            assert_eq!(added, REQUIRED_SPECIALS);
            assert!(json["added_tokens"].as_array().unwrap().iter().all(|t| t["special"] == true));
        }
    }

    /// Splits a shard at the end-of-text id and decodes each document.
    fn decode_shard(tok: &HfTokenizer, ids: &[u32], eot: u32) -> Vec<String> {
        assert_eq!(ids.last(), Some(&eot), "a shard ends with <|endoftext|>");
        ids[..ids.len() - 1]
            .split(|&i| i == eot)
            .map(|doc| tok.decode(doc, false).unwrap())
            .collect()
    }

    #[test]
    fn shards_decode_back_to_the_text_and_meta_describes_them() {
        let docs = sample_docs();
        for kind in [Kind::Bpe, Kind::Char] {
            let (_c, out, made) = build(&params(kind, None), &docs[..300], &docs[300..]);
            let tok = load(out.path());
            let meta: ShardMeta =
                serde_json::from_slice(&std::fs::read(out.path().join("meta.json")).unwrap())
                    .unwrap();
            assert_eq!(meta, made.meta);
            assert_eq!(meta.dtype, Dtype::U16);
            let train = read_shard(&out.path().join("train.bin"), meta.dtype).unwrap();
            let val = read_shard(&out.path().join("val.bin"), meta.dtype).unwrap();
            assert_eq!(train.len() as u64, meta.train_tokens);
            assert_eq!(val.len() as u64, meta.val_tokens);
            assert_eq!(
                std::fs::metadata(out.path().join("train.bin")).unwrap().len(),
                2 * meta.train_tokens
            );
            assert_eq!(decode_shard(&tok, &train, meta.eot_id), docs[..300], "{kind:?} train");
            assert_eq!(decode_shard(&tok, &val, meta.eot_id), docs[300..], "{kind:?} val");
        }
    }

    #[test]
    fn chat_and_preference_records_contribute_each_text() {
        let corpus = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let train = vec![
            json!({ "messages": [{ "role": "user", "content": "Hi!" }, { "role": "assistant", "content": "Hello! How can I help?" }] }),
            json!({ "prompt": "What is 2 plus 2?", "completion": "2 plus 2 is 4." }),
            json!({ "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No." }),
        ];
        write_corpus(corpus.path(), &train, &[json!({ "prompt": "Count to 3." })]);
        let made = write_artifact(&params(Kind::Bpe, Some(300)), corpus.path(), out.path(), &QUIET)
            .unwrap();
        let tok = load(out.path());
        let ids = read_shard(&out.path().join("train.bin"), made.meta.dtype).unwrap();
        assert_eq!(
            decode_shard(&tok, &ids, made.meta.eot_id),
            [
                "Hi!",
                "Hello! How can I help?",
                "What is 2 plus 2?",
                "2 plus 2 is 4.",
                "Say hi.",
                "Hi!",
                "No."
            ]
        );
        let val = read_shard(&out.path().join("val.bin"), made.meta.dtype).unwrap();
        assert_eq!(decode_shard(&tok, &val, made.meta.eot_id), ["Count to 3."]);
    }

    #[test]
    fn same_corpus_and_params_give_byte_identical_outputs() {
        let docs = sample_docs();
        for kind in [Kind::Bpe, Kind::Char] {
            let p = params(kind, Some(700));
            let (_c, first, _) = build(&p, &docs, &docs[..20]);
            // Several runs: the trainer's hash maps are seeded differently every time.
            for _ in 0..3 {
                let (_c, again, _) = build(&p, &docs, &docs[..20]);
                for f in ["tokenizer.json", "train.bin", "val.bin", "meta.json"] {
                    let a = std::fs::read(first.path().join(f)).unwrap();
                    let b = std::fs::read(again.path().join(f)).unwrap();
                    assert!(a == b, "{kind:?}: {f} differs between two runs");
                }
            }
        }
    }

    #[test]
    fn a_vocabulary_over_65536_tokens_writes_u32_shards() {
        // 81,476 distinct CJK and Hangul characters, each its own char token.
        let chars: Vec<char> =
            [(0x4e00, 0x9fff), (0xac00, 0xd7a3), (0x3400, 0x4dbf), (0x20000, 0x2a6df)]
                .iter()
                .flat_map(|&(lo, hi)| (lo..=hi).filter_map(char::from_u32))
                .collect();
        let docs: Vec<String> = chars.chunks(2000).map(|c| c.iter().collect()).collect();
        let (_c, out, made) = build(&params(Kind::Char, None), &docs, &docs[..1]);
        assert_eq!(made.meta.vocab_size, 3 + chars.len() + 256);
        assert_eq!(made.meta.dtype, Dtype::U32);
        let meta: Value =
            serde_json::from_slice(&std::fs::read(out.path().join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["dtype"], "u32");
        let ids = read_shard(&out.path().join("train.bin"), Dtype::U32).unwrap();
        assert!(ids.iter().any(|&i| i > u16::MAX as u32));
        assert_eq!(decode_shard(&load(out.path()), &ids, made.meta.eot_id), docs);
    }

    #[test]
    fn params_are_checked() {
        let problems =
            |p: &Params| Tokenizer::validate(p).into_iter().map(|p| p.message).collect::<Vec<_>>();
        assert!(problems(&params(Kind::Bpe, Some(512))).is_empty());
        let small = problems(&params(Kind::Bpe, Some(100)));
        assert!(small.len() == 1 && small[0].contains("vocab_size 100"), "{small:?}");
        let mut p = params(Kind::Bpe, None);
        p.special_tokens =
            vec!["<|endoftext|>".into(), "<|pad|>".into(), "<|pad|>".into(), "".into()];
        let got = problems(&p);
        assert!(got.iter().any(|m| m.contains("`<|pad|>` is listed twice")), "{got:?}");
        assert!(got.iter().any(|m| m.contains("empty")), "{got:?}");
        assert!(got.iter().any(|m| m.contains("`<|im_start|>` is missing")), "{got:?}");
        assert!(got.iter().any(|m| m.contains("`<|im_end|>` is missing")), "{got:?}");
        let unknown =
            serde_json::from_value::<Params>(json!({ "vocab": 512 })).unwrap_err().to_string();
        assert!(unknown.contains("unknown field `vocab`"), "{unknown}");
        let kind = serde_json::from_value::<Params>(json!({ "kind": "wordpiece" }))
            .unwrap_err()
            .to_string();
        assert!(kind.contains("bpe") && kind.contains("char"), "{kind}");
        let p = Params { split_digits: true, ..params(Kind::Char, None) };
        assert_eq!(problems(&p), ["`split_digits` is for `kind: bpe`"]);
    }

    #[test]
    fn a_bad_corpus_is_reported_with_file_and_line() {
        let run = |train: &str, val: Option<&str>| {
            let corpus = tempfile::tempdir().unwrap();
            let out = tempfile::tempdir().unwrap();
            std::fs::write(corpus.path().join("train.jsonl"), train).unwrap();
            if let Some(val) = val {
                std::fs::write(corpus.path().join("val.jsonl"), val).unwrap();
            }
            match write_artifact(&params(Kind::Bpe, None), corpus.path(), out.path(), &QUIET) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a bad corpus was accepted"),
            }
        };
        let e = run("{\"text\": \"ok\"}\n{not json\n", Some(""));
        assert!(e.contains("input `corpus` train.jsonl:2: invalid JSON"), "{e}");
        let e = run("\n{\"text\": \"ok\"}\n{\"title\": \"x\"}\n", Some(""));
        assert!(
            e.contains("input `corpus` train.jsonl:3: no field says what the record is"),
            "{e}"
        );
        let e = run("{\"text\": 5}\n", Some(""));
        assert!(e.contains("`text` must be a string"), "{e}");
        let e = run("{\"messages\": [{\"role\": \"user\"}]}\n", Some(""));
        assert!(e.contains("`messages[0]` has no `content`"), "{e}");
        let e = run("{\"text\": \"ok\"}\n", None);
        assert!(e.contains("no `val.jsonl`") && e.contains("ingest"), "{e}");
        let e = run("", Some(""));
        assert!(e.contains("no text to train on"), "{e}");
        let e = run("{\"text\": \"ok\"}\n", Some("[1, 2]\n"));
        assert!(e.contains("input `corpus` val.jsonl:1: a record must be a JSON object"), "{e}");
    }

    #[test]
    fn a_cancelled_run_stops() {
        let corpus = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write_corpus(corpus.path(), &texts(&["some text"]), &texts(&["more"]));
        fn always() -> bool {
            true
        }
        let hooks = Hooks { progress: &no_progress, cancelled: &always };
        for kind in [Kind::Bpe, Kind::Char] {
            let r = write_artifact(&params(kind, None), corpus.path(), out.path(), &hooks);
            assert!(matches!(r, Err(StageError::Cancelled)), "{kind:?}");
        }
    }

    const PIPELINE: &str = r#"
name: tok-e2e
seed: 7
stages:
  corpus:
    uses: command
    with:
      cmd: |
        printf '%s\n' '{"text": "the cat sat on the mat"}' '{"text": "the dog sat on the log"}' > "$HONE_OUT/train.jsonl"
        printf '%s\n' '{"text": "a cat and a dog"}' > "$HONE_OUT/val.jsonl"
        printf '%s\n' '{"format": "text", "train": 2, "val": 1}' > "$HONE_OUT/meta.json"
  tok:
    uses: tokenizer
    inputs: { corpus: corpus }
    with: { vocab_size: 280, min_frequency: 1 }
  chars:
    uses: tokenizer
    inputs: { corpus: corpus }
    with: { kind: char }
"#;

    #[test]
    fn runs_through_the_engine_and_is_cached_on_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let p = support::load(dir.path(), PIPELINE).unwrap();
        let (summary, events) = support::run(dir.path(), &p, quiet);
        assert!(summary.ok(), "{:?}", summary.failed);

        for (stage, kind) in [("tok", "bpe"), ("chars", "char")] {
            let artifact = support::output(dir.path(), &p, stage);
            let meta: ShardMeta =
                serde_json::from_slice(&std::fs::read(artifact.join("meta.json")).unwrap())
                    .unwrap();
            assert_eq!(serde_json::to_value(meta.kind).unwrap(), kind);
            let tok = HfTokenizer::from_file(artifact.join("tokenizer.json")).unwrap();
            let ids = read_shard(&artifact.join("train.bin"), meta.dtype).unwrap();
            assert_eq!(
                tok.decode(&ids, false).unwrap(),
                "the cat sat on the mat<|endoftext|>the dog sat on the log<|endoftext|>"
            );
            let val = read_shard(&artifact.join("val.bin"), meta.dtype).unwrap();
            assert_eq!(tok.decode(&val, false).unwrap(), "a cat and a dog<|endoftext|>");
        }
        let finished = support::finished_metrics(&events, "tok");
        // Two short documents run out of pairs to merge before 280.
        let v = finished["vocab_size"].as_u64().unwrap();
        assert!(v > 259 && v < 280, "vocab_size {v}");
        assert_eq!(finished["train_documents"], 2);

        let (again, _) = support::run(dir.path(), &p, quiet);
        assert!(again.ran.is_empty(), "a rerun with nothing changed ran {:?}", again.ran);
        assert_eq!(again.cached.len(), 3);
    }

    #[test]
    fn wrong_wiring_and_bad_params_fail_at_load() {
        let bad = PIPELINE.replace(
            "inputs: { corpus: corpus }\n    with: { kind: char }",
            "inputs: { corpus: tok }\n    with: { kind: char, vocab_size: 10 }",
        );
        let Err(e) = support::load(Path::new("."), &bad) else {
            panic!("a tokenizer fed from a tokenizer was accepted")
        };
        assert!(e.contains("tokenizer") && e.contains("corpus"), "{e}");
        assert!(e.contains("vocab_size 10"), "{e}");
    }
}
