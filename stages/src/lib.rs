//! hone-stages: the stage kinds of the ML recipe, and the library they stand on.
//!
//! - [`kinds`]: one file (or folder) per stage kind, side by side; a kind imports the engine
//!   and the library below, never another kind. Every kind is listed in [`registry`].
//! - The library: [`model`] (the GPT, its kernels, the chat template, checkpoints, export),
//!   [`data`] (record formats, corpora, filters, rankings), `training` (the loop the training
//!   kinds share), [`rl`] (reward models and the scoring RLHF needs), [`labels`] (`hone
//!   label`'s store), [`tinyworld`] (the bundled data), [`report`] (`hone report`'s page) and
//!   [`ports`] (the port types).
//!
//! To add a kind: write `src/kinds/<kind>.rs` with its params type, a unit struct
//! implementing [`hone_engine::stage::Stage`] and its tests, declare it in `kinds/mod.rs`
//! and add one line to [`registry`]. What two kinds would share goes into the library.

pub mod data;
pub mod kinds;
pub mod labels;
pub mod model;
pub mod ports;
pub mod report;
pub mod rl;
#[cfg(test)]
mod testing;
pub mod tinyworld;
mod training;

use hone_engine::stage::Registry;

use kinds::{
    command, dpo, evaluate, grpo, import, ingest, ppo, pretrain, rank, reward, sample, sft,
    tokenizer,
};

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
        &import::Import,
        &sft::Sft,
        &evaluate::Evaluate,
        &sample::Sample,
        &rank::Rank,
        &reward::Reward,
        &ppo::Ppo,
        &dpo::Dpo,
        &grpo::Grpo,
    ])
}
