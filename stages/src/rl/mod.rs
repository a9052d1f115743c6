//! What the RLHF kinds (`reward`, `ppo`, and `evaluate`'s reward column) share: a reward
//! model, its scores and how a response is scored ([`reward_model`]); rankings as token rows
//! and pairs, and the held-out prompts ([`preferences`]); how far a policy moved from a
//! reference on its answers ([`kl`]).

pub mod kl;
pub mod preferences;
pub mod reward_model;
