//! The stage kinds, side by side: each imports the engine and the library (`model`, `data`,
//! `training`, `rl`, ...), never another kind. [`crate::registry`] lists them.

pub mod command;
pub mod dpo;
pub mod evaluate;
pub mod grpo;
pub mod import;
pub mod ingest;
pub mod ppo;
pub mod pretrain;
pub mod rank;
pub mod reward;
pub mod sample;
pub mod sft;
pub mod tokenizer;
