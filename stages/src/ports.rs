//! Port types of the ML recipe. The engine only checks that they match: an input takes its
//! own type or a narrower one.

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
