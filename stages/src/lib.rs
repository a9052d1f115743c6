//! hone-stages: every stage kind hone ships, one file each, registered in [`registry`].
//!
//! To add a kind: write `src/<kind>.rs` with its params type, a unit struct implementing
//! [`hone_engine::stage::Stage`] and its tests, then add one line to [`registry`].

pub mod command;
pub mod data;
pub mod ingest;
pub mod tinyworld;
pub mod tokenizer;
pub mod model;
pub mod pretrain;
pub mod chat_template;
pub mod sft;
pub mod evaluate;
pub mod report;
mod training;
#[cfg(test)]
mod test_support;

use hone_engine::stage::Registry;

/// Port types of the ML recipe. The engine only checks that they match.
pub mod ports {
    use hone_engine::stage::PortType;
    pub const CORPUS: PortType = PortType("corpus");
    pub const TOKENIZER: PortType = PortType("tokenizer");
    pub const MODEL: PortType = PortType("model");
    pub const CHAT_DATA: PortType = PortType("chat-data");
    pub const PROMPTS: PortType = PortType("prompts");
    pub const CANDIDATES: PortType = PortType("candidates");
    pub const RANKINGS: PortType = PortType("rankings");
    pub const REWARD_MODEL: PortType = PortType("reward-model");
    pub const METRICS: PortType = PortType("metrics");
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
    ])
}
