//! `pii-redact`: rewrite e-mail addresses and phone numbers to placeholder tokens.
//! Config (all optional): `{ "emails": true, "phones": true, "email_token": "[EMAIL]",
//! "phone_token": "[PHONE]" }`. The scanner lives in `redact.rs`, plain Rust with no SDK, so
//! hone's benchmark can run the very same logic natively.

mod redact;

use hone_filter_sdk::{Filter, Verdict, export_filter};

struct PiiRedact(redact::Redactor);

impl Filter for PiiRedact {
    type Config = redact::Config;

    fn new(config: redact::Config) -> Result<Self, String> {
        Ok(PiiRedact(redact::Redactor::new(config)?))
    }

    fn filter(&mut self, doc: &str) -> Verdict {
        match self.0.redact(doc) {
            Some(text) => Verdict::Rewrite(text),
            None => Verdict::Keep,
        }
    }
}

export_filter!(PiiRedact);
