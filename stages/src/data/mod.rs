//! Data for the `ingest` stage: sources resolved and read ([`sources`]; Parquet and Arrow
//! through [`columnar`]), records normalised by one reader ([`formats`]), the document
//! filter chain ([`filters`]), and the data sets hone carries ([`builtin`]); the reader of its
//! output for the stages after it ([`corpus`]); the RLHF artifacts' record types
//! ([`candidates`], [`rankings`]) and preference files ([`preferences`]); the prompts `sample`
//! and `evaluate` answer ([`prompts`]); and what
//! `evaluate` writes, for `hone report` ([`evaluation`]).

pub mod builtin;
pub mod candidates;
pub mod columnar;
pub mod corpus;
pub mod evaluation;
pub mod filters;
pub mod formats;
pub mod preferences;
pub mod prompts;
pub mod rankings;
pub mod sources;
