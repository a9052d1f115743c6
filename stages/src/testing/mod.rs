//! Test-only code: helpers that run pipelines in a temp workspace ([`support`]), the golden
//! digests every kind pins ([`golden`]), and the loader's property test ([`load_never_panics`]).

mod golden;
mod load_never_panics;
pub mod support;
