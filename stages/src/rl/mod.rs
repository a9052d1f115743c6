//! What the RLHF kinds (`reward`, `ppo`, and `evaluate`'s reward column) share: a reward
//! model, its scores and how a response is scored ([`reward_model`]).

pub mod reward_model;
