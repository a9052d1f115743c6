//! Stop-word language identification: the language whose most common function words make up
//! the largest share of a document's words. Cheap, explainable, and good enough to keep an
//! English corpus English. Plain Rust (std and serde only): hone's plugin benchmark compiles
//! this same file natively.

use std::collections::HashMap;

use serde::Deserialize;

/// (code, stop words). Hand-picked frequent function words; a word shared by languages
/// counts for each of them.
const LANGUAGES: &[(&str, &str)] = &[
    ("en", "the of and to in is that it was for on are as with his they at be this have from or had by not but what all were we when your can there an which their said if will would been has who its she he you my them than then these so"),
    ("fr", "le la les de des du un une et est en que qui dans pour pas sur au aux avec ce cette il elle ils nous vous je sont mais ou son sa ses leur par plus ne se été être très on"),
    ("de", "der die das und ist nicht ein eine zu den dem des mit sich auf für von auch es ich sie er wir ihr wird werden sind war aus bei nach wie oder aber noch nur im dass einen einer"),
    ("es", "el la los las de del y que en un una es por con para no se su sus al lo como más pero está son fue este esta muy también hay ya ser tiene sin sobre entre cuando porque"),
    ("it", "il lo la gli le di del della che e è un una per non in con sono si da al alla come più ma questo questa anche nel nella ha hanno essere dei delle molto perché quando io noi"),
    ("pt", "o a os as de do da dos das e que em um uma para com não por se no na nos mais como mas foi ao ele ela são está seu sua também muito já quando porque isso você"),
    ("nl", "de het een en van in is dat op te zijn niet met voor er maar om hij zij ook als aan bij nog door wordt naar uit dan was ze wat ik wij heeft hebben geen deze dit over"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Languages to keep (codes from `LANGUAGES`).
    pub languages: Vec<String>,
    /// Below this share of stop words no language is recognised and the document is dropped.
    pub min_ratio: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { languages: vec!["en".into()], min_ratio: 0.1 }
    }
}

pub struct Detector {
    /// word -> bit set of the languages it is a stop word of.
    words: HashMap<&'static str, u8>,
    keep: u8,
    min_ratio: f64,
    reasons: Vec<String>,
    buf: String,
}

impl Detector {
    pub fn new(config: Config) -> Result<Detector, String> {
        let mut keep = 0u8;
        for l in &config.languages {
            let i = LANGUAGES.iter().position(|(code, _)| code == l).ok_or_else(|| {
                let known: Vec<_> = LANGUAGES.iter().map(|(c, _)| *c).collect();
                format!("unknown language `{l}` in `languages`; known: {}", known.join(", "))
            })?;
            keep |= 1 << i;
        }
        if keep == 0 {
            return Err("`languages` is empty: every document would be dropped".into());
        }
        if !(0.0..=1.0).contains(&config.min_ratio) {
            return Err(format!("`min_ratio` must be between 0 and 1, got {}", config.min_ratio));
        }
        let mut words = HashMap::new();
        for (i, (_, list)) in LANGUAGES.iter().enumerate() {
            for w in list.split(' ') {
                *words.entry(w).or_insert(0u8) |= 1 << i;
            }
        }
        let reasons = LANGUAGES.iter().map(|(c, _)| format!("language {c}")).collect();
        Ok(Detector { words, keep, min_ratio: config.min_ratio, reasons, buf: String::new() })
    }

    /// `None` to keep the document, else why it is dropped.
    pub fn decide(&mut self, doc: &str) -> Option<&str> {
        let mut hits = [0u32; LANGUAGES.len()];
        let mut total = 0u32;
        for word in doc.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()) {
            total += 1;
            self.buf.clear();
            self.buf.extend(word.chars().flat_map(char::to_lowercase));
            if let Some(&mask) = self.words.get(self.buf.as_str()) {
                for (i, h) in hits.iter_mut().enumerate() {
                    *h += u32::from(mask >> i & 1);
                }
            }
        }
        // Ties go to the earlier language in `LANGUAGES`, so the verdict is deterministic.
        let (best, &n) = hits.iter().enumerate().rev().max_by_key(|(_, n)| **n)?;
        if total == 0 || f64::from(n) < self.min_ratio * f64::from(total) || n == 0 {
            return Some("no known language");
        }
        if self.keep >> best & 1 == 1 { None } else { Some(&self.reasons[best]) }
    }
}
