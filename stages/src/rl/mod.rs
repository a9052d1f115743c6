//! What the RLHF kinds (`reward`, `ppo`, `grpo`, `dpo`, and `evaluate`'s reward column) share:
//! a reward model, its scores and how a response is scored ([`reward_model`]); rankings as
//! token rows and pairs, and the held-out prompts ([`preferences`]); how far a policy moved
//! from a reference on its answers ([`kl`]); the frozen reference itself ([`reference`]); a rollout's prompts, sampling and batched layout
//! ([`rollout`]); where a rollout's scores come from ([`scorer`]).

pub mod kl;
pub mod preferences;
pub mod reference;
pub mod reward_model;
pub mod rollout;
pub mod scorer;
