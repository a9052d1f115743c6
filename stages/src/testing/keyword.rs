//! Preference data for the tests of the kinds that learn from rankings (`reward`, `dpo`):
//! rankings in which the answers holding a keyword are better ([`rankings`]), and a workspace
//! with a tiny untrained chat model that trains a kind on them ([`Bench`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use hone_engine::events::Event;
use hone_engine::exec::RunSummary;
use hone_engine::spec;

use crate::data::rankings::{self, Ranking};
use crate::model::chat_template::test_tokenizer;
use crate::model::rng::{Rng, Stream};
use crate::testing::support;

/// The answers that hold it are better than those that do not.
pub(crate) const KEYWORD: &str = "ok";
/// Letters of the answers without the keyword's.
const LETTERS: &[u8] = b"abcdefghij";

pub(crate) fn rankings(n: usize, seed: u64) -> Vec<Ranking> {
    let mut rng = Rng::new(seed, Stream::Train);
    let mut word = |len: usize| {
        (0..len).map(|_| LETTERS[rng.below(LETTERS.len())] as char).collect::<String>()
    };
    (0..n)
        .map(|i| {
            let prompt = format!("{}{i}?", word(2));
            // Four answers, the first one or two with the keyword (then shuffled by index).
            let good = 1 + i % 2;
            let mut responses: Vec<String> = (0..4)
                .map(
                    |k| if k < good { format!("{}{KEYWORD}{}", word(3), word(2)) } else { word(7) },
                )
                .collect();
            responses.rotate_left(i % 4);
            let (mut better, mut worse) = (Vec::new(), Vec::new());
            for (k, r) in responses.iter().enumerate() {
                if r.contains(KEYWORD) { better.push(k) } else { worse.push(k) }
            }
            Ranking { prompt: prompt.into(), responses, ranking: vec![better, worse] }
        })
        .collect()
}

/// A workspace with a tiny untrained chat model in `base/` and rankings in `rank/`, and
/// pipelines that copy them in with `command` stages and train a `kind` stage (named after
/// its kind) on them.
pub(crate) struct Bench {
    pub dir: tempfile::TempDir,
    kind: &'static str,
}

impl Bench {
    pub fn new(kind: &'static str, rs: &[Ranking]) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let (json, vocab) = test_tokenizer("abcdefghijklmnopqrstuvwxyz0123456789?");
        let base = dir.path().join("base");
        support::save_tiny_gpt(&base, vocab, 48, Some(0));
        std::fs::write(base.join("tokenizer.json"), json).unwrap();
        let rank = dir.path().join("rank");
        std::fs::create_dir_all(&rank).unwrap();
        let mut buf = Vec::new();
        rankings::write(&mut buf, rs).unwrap();
        std::fs::write(rank.join(rankings::FILE), buf).unwrap();
        Bench { dir, kind }
    }

    pub fn pipeline(&self, with: &str) -> spec::Pipeline {
        let src = format!(
            "name: t\nseed: 5\nstages:\n  base: {{ uses: command, with: {{ cmd: 'cp base/* \"$HONE_OUT\"/', deps: [base] }} }}\n  rank: {{ uses: command, with: {{ cmd: 'cp rank/* \"$HONE_OUT\"/', deps: [rank] }} }}\n  {kind}:\n    uses: {kind}\n    inputs: {{ model: base, rankings: rank }}\n    with: {{ threads: 1, {with} }}\n",
            kind = self.kind
        );
        spec::load_str(&self.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn run(
        &self,
        p: &spec::Pipeline,
        on_event: impl Fn(&Event, &AtomicBool) + Send + Sync,
    ) -> (RunSummary, Vec<Event>) {
        support::run(self.dir.path(), p, on_event)
    }

    pub fn output(&self, p: &spec::Pipeline) -> PathBuf {
        support::output(self.dir.path(), p, self.kind)
    }
}
