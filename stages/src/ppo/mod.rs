//! PPO against a reward model (the recipe's RLHF step 3d). [`math`] holds the algorithm's
//! arithmetic (per-token rewards, GAE, whitening, the clipped losses, the KL controller),
//! each piece tested against a hand computation; the `ppo` stage kind builds on it.

pub mod math;
