//! The prompts a stage answers (`sample`, `evaluate`): the prompt records of a corpus, in the
//! splits a stage's `split:` param chooses ([`Splits`]).

use std::path::Path;

use hone_engine::stage::StageError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::corpus::{Corpus, Split};
use crate::data::formats::PromptText;

/// Which splits of a prompt corpus to read: both, or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Splits {
    All,
    Train,
    Val,
}

impl Splits {
    fn splits(self) -> &'static [Split] {
        match self {
            Splits::All => &Split::BOTH,
            Splits::Train => &[Split::Train],
            Splits::Val => &[Split::Val],
        }
    }
}

/// One prompt to answer: its text (or conversation) and its checkable answer, if any.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub prompt: PromptText,
    pub answer: Option<String>,
}

/// The prompt records of the corpus in `dir` (wired to input `prompts` of a `kind` stage), in
/// the chosen splits; an answer that is not a string (a number) is kept as its JSON text.
pub fn read_prompts(dir: &Path, splits: Splits, kind: &str) -> Result<Vec<Prompt>, StageError> {
    let corpus = Corpus::open(dir, "prompts")?;
    let mut out = Vec::new();
    for &s in splits.splits() {
        out.extend(corpus.prompts(s, kind)?.into_iter().map(|r| Prompt {
            prompt: r.prompt,
            answer: r.answer.map(|a| match a {
                Value::String(s) => s,
                other => other.to_string(),
            }),
        }));
    }
    Ok(out)
}
