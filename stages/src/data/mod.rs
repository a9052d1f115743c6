//! Data for the `ingest` stage: reading and normalising records ([`formats`]), the document
//! filter chain ([`filters`]), and the data sets hone carries ([`builtin`]).

pub mod builtin;
pub mod filters;
pub mod formats;
