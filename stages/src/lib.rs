//! hone-stages: every stage kind hone ships, one file each, registered in [`registry`].
//!
//! To add a kind: write `src/<kind>.rs` with its params type, a unit struct implementing
//! [`hone_engine::stage::Stage`] and its tests, then add one line to [`registry`].

pub mod chat_template;
pub mod command;
pub mod data;
pub mod evaluate;
#[cfg(test)]
mod golden;
pub mod ingest;
pub mod labels;
#[cfg(test)]
mod load_never_panics;
pub mod model;
pub mod ppo;
pub mod pretrain;
pub mod rank;
pub mod report;
pub mod reward;
pub mod sample;
pub mod sft;
#[cfg(test)]
mod test_support;
pub mod tinyworld;
pub mod tokenizer;
mod training;

use hone_engine::stage::Registry;

/// Port types of the ML recipe. The engine only checks that they match: an input takes its
/// own type or a narrower one.
pub mod ports {
    use hone_engine::stage::PortType;
    /// An `ingest` artifact: `train.jsonl`, `val.jsonl`, `meta.json` (read it with
    /// [`crate::data::corpus::Corpus`]). Any record format; the narrower types below say which.
    pub const CORPUS: PortType = PortType::new("corpus");
    /// A corpus of conversations (`messages`).
    pub const CHAT_DATA: PortType = PortType::narrows("chat-data", &CORPUS);
    /// A corpus of prompt records (`prompt`, `answer`?).
    pub const PROMPTS: PortType = PortType::narrows("prompts", &CORPUS);
    /// A corpus of preference pairs (`prompt`, `chosen`, `rejected`).
    pub const PREFERENCES: PortType = PortType::narrows("preferences", &CORPUS);
    pub const TOKENIZER: PortType = PortType::new("tokenizer");
    pub const MODEL: PortType = PortType::new("model");
    pub const CANDIDATES: PortType = PortType::new("candidates");
    pub const RANKINGS: PortType = PortType::new("rankings");
    pub const REWARD_MODEL: PortType = PortType::new("reward-model");
    pub const METRICS: PortType = PortType::new("metrics");
}

/// Process-wide set-up for running stages, once, first thing in `main`:
/// - candle's own thread pool gets no extra workers (unless `CANDLE_NUM_THREADS` is set): its
///   workers spin after every op and, on a few cores, starve hone's kernels, which run their
///   heavy elementwise work on the rayon pool (2 threads measured 3-4x slower);
/// - the allocator keeps freed memory ([`model::kernels::tune_allocator`]).
///
/// # Safety
/// It sets an environment variable: call it before any other thread exists.
pub unsafe fn init() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees that no other thread exists yet.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    model::kernels::tune_allocator();
}

/// Every stage kind, in one list.
pub fn registry() -> Registry {
    Registry::new(vec![
        &command::Command,
        &ingest::Ingest,
        &tokenizer::Tokenizer,
        &pretrain::Pretrain,
        &sft::Sft,
        &evaluate::Evaluate,
        &sample::Sample,
        &rank::Rank,
        &reward::Reward,
        &ppo::Ppo,
    ])
}
