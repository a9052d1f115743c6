//! The e-mail and phone-number scanner behind `pii-redact`: byte-level and allocation-free
//! unless something is found. Plain Rust (std and serde only): hone's plugin benchmark
//! compiles this same file natively to compare with the WASM build.
//!
//! What counts:
//! - e-mail: `local@domain.tld`, local part of `[A-Za-z0-9._%+-]`, a domain of at least two
//!   labels of `[A-Za-z0-9-]` whose last label (the TLD) is 2+ letters.
//! - phone: 10 to 15 digits in at least two groups of at most 4 digits (a leading `+` group
//!   may be longer), separated by single spaces, `-`, `.` or parentheses, the last group
//!   3+ digits, not touching a letter or digit. `+1 (555) 123-4567`, `555-123-4567` and
//!   `+44 20 7946 0958` match; dates, ISBNs and a bare `5551234567` do not.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub emails: bool,
    pub phones: bool,
    pub email_token: String,
    pub phone_token: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { emails: true, phones: true, email_token: "[EMAIL]".into(), phone_token: "[PHONE]".into() }
    }
}

pub struct Redactor {
    config: Config,
}

impl Redactor {
    pub fn new(config: Config) -> Result<Redactor, String> {
        if !config.emails && !config.phones {
            return Err("both `emails` and `phones` are false: the plugin would do nothing".into());
        }
        Ok(Redactor { config })
    }

    /// The document with every match replaced, or `None` when there is nothing to redact.
    pub fn redact(&self, doc: &str) -> Option<String> {
        let b = doc.as_bytes();
        let mut out: Option<String> = None;
        let mut copied = 0; // bytes of `doc` already handled
        let mut i = 0;
        while i < b.len() {
            // Skip to the next byte that can anchor a match: most bytes are prose.
            match b[i..].iter().position(|&c| ANCHOR[c as usize]) {
                Some(k) => i += k,
                None => break,
            }
            let found = match b[i] {
                b'@' if self.config.emails => email_at(b, i, copied).map(|s| (s, &self.config.email_token)),
                b'0'..=b'9' | b'+' | b'(' if self.config.phones && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) => {
                    phone_at(b, i).map(|s| (s, &self.config.phone_token))
                }
                _ => None,
            };
            match found {
                Some(((start, end), token)) => {
                    let o = out.get_or_insert_with(|| String::with_capacity(doc.len()));
                    // Spans start and end on ASCII bytes, so these are char boundaries.
                    o.push_str(&doc[copied..start]);
                    o.push_str(token);
                    copied = end;
                    i = end;
                }
                None => i += 1,
            }
        }
        out.map(|mut o| {
            o.push_str(&doc[copied..]);
            o
        })
    }
}

/// Bytes where a match can be anchored: `@` for e-mails, digits, `+` and `(` for phones.
static ANCHOR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = true;
        c += 1;
    }
    t[b'@' as usize] = true;
    t[b'+' as usize] = true;
    t[b'(' as usize] = true;
    t
};

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

/// The e-mail around the `@` at `at`, not reaching left of `floor`.
fn email_at(b: &[u8], at: usize, floor: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > floor && is_local(b[start - 1]) {
        start -= 1;
    }
    while start < at && b[start] == b'.' {
        start += 1;
    }
    if start == at {
        return None;
    }
    let mut end = at + 1;
    while end < b.len() && is_domain(b[end]) {
        end += 1;
    }
    // A sentence may end right after the address.
    while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &b[at + 1..end];
    let mut labels = domain.split(|&c| c == b'.');
    let n = domain.split(|&c| c == b'.').count();
    if n < 2 || labels.any(|l| l.is_empty()) {
        return None;
    }
    let tld = domain.rsplit(|&c| c == b'.').next()?;
    (tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)).then_some((start, end))
}

/// The phone number starting at `s`, if one does.
fn phone_at(b: &[u8], s: usize) -> Option<(usize, usize)> {
    let plus = b[s] == b'+';
    let mut i = s + plus as usize;
    let (mut digits, mut groups, mut cur, mut seps) = (0usize, 0usize, 0usize, 0usize);
    let mut first_group = true;
    let mut end = s;
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' => {
                cur += 1;
                digits += 1;
                // Bounds the scan, so a long run of digits costs linear time overall.
                if digits > 15 {
                    return None;
                }
                seps = 0;
                end = i + 1;
            }
            b' ' | b'-' | b'.' | b'(' | b')' => {
                seps += 1;
                if seps > 2 {
                    break;
                }
                if cur > 0 {
                    if cur > 4 && !(plus && first_group) {
                        return None;
                    }
                    groups += 1;
                    first_group = false;
                    cur = 0;
                }
            }
            _ => break,
        }
        i += 1;
    }
    if cur > 0 {
        if cur > 4 && !(plus && first_group) {
            return None;
        }
        groups += 1;
    }
    // The last group ended at `end`; it must not run into a letter or digit.
    let last = b[..end].iter().rev().take_while(|c| c.is_ascii_digit()).count();
    let touching = end < b.len() && b[end].is_ascii_alphanumeric();
    ((10..=15).contains(&digits) && groups >= 2 && last >= 3 && !touching).then_some((s, end))
}
