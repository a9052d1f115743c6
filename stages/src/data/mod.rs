//! Data for the `ingest` stage: reading and normalising records ([`formats`]), the document
//! filter chain ([`filters`]), and the data sets hone carries ([`builtin`]); and the RLHF
//! artifacts' record types ([`rankings`]).

pub mod builtin;
pub mod filters;
pub mod formats;
pub mod rankings;
