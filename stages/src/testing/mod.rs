//! Test-only code: helpers that run pipelines in a temp workspace ([`support`]), a tiny chat
//! model and prompts for the policy-gradient kinds ([`chat_bench`]), the golden
//! digests every kind pins ([`golden`]), the loader's property test ([`load_never_panics`]),
//! and preference data for the kinds that learn from rankings ([`keyword`]).

pub mod chat_bench;
mod golden;
pub mod keyword;
mod load_never_panics;
pub mod support;
