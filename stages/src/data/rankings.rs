//! Rankings: what the `rank` stage writes and the `reward` stage reads (port type `rankings`).
//!
//! `rankings.jsonl` holds one [`Ranking`] a line:
//! `{"prompt": "...", "responses": ["...", ...], "ranking": [[2], [0, 3], [1]]}`: groups of
//! response indices from best to worst; the indices within a group are tied. Every response
//! appears in exactly one group. Every (member of a better group, member of a worse group) is a
//! preference [`Pair`]; ties give none ([`Ranking::pairs`]). A preference pair from a file is
//! `responses: [chosen, rejected], ranking: [[0], [1]]` ([`Ranking::preference`]). A skipped
//! prompt has no line. The stage's `meta.json` (labeler, counts, skips) sits beside it.
//!
//! [`read`] checks every record and names the file and line of the first bad one; [`write`]
//! writes the lines [`read`] reads back.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::formats::PromptText;

/// The file name inside a `rankings` artifact.
pub const FILE: &str = "rankings.jsonl";

/// One ranked prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ranking {
    /// A string, or a conversation ending in a user turn ([`PromptText`]).
    pub prompt: PromptText,
    pub responses: Vec<String>,
    /// Groups of indices into `responses`, best group first; a group's members are tied.
    pub ranking: Vec<Vec<usize>>,
}

/// A preference implied by a ranking: indices into [`Ranking::responses`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair {
    pub chosen: usize,
    pub rejected: usize,
}

/// A bad `rankings.jsonl`: which file, which line (from 1), and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RankingsError {
    #[error("cannot read `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Record { path: PathBuf, line: usize, message: String },
}

impl Ranking {
    /// A preference pair as a ranking: `chosen` over `rejected`.
    pub fn preference(
        prompt: impl Into<PromptText>,
        chosen: impl Into<String>,
        rejected: impl Into<String>,
    ) -> Ranking {
        Ranking {
            prompt: prompt.into(),
            responses: vec![chosen.into(), rejected.into()],
            ranking: vec![vec![0], vec![1]],
        }
    }

    /// Checks that the groups partition the responses: every index in range, each exactly
    /// once, no empty group.
    pub fn check(&self) -> Result<(), String> {
        let n = self.responses.len();
        if n == 0 {
            return Err("`responses` is empty: a ranked prompt needs at least one response".into());
        }
        let mut seen = vec![false; n];
        for (g, group) in self.ranking.iter().enumerate() {
            if group.is_empty() {
                return Err(format!(
                    "`ranking` group {g} is empty: each group names at least one response"
                ));
            }
            for &i in group {
                if i >= n {
                    return Err(format!(
                        "`ranking` names response {i}, but there are {n} responses (indices 0 to {})",
                        n - 1
                    ));
                }
                if std::mem::replace(&mut seen[i], true) {
                    return Err(format!(
                        "`ranking` names response {i} twice: each response belongs to one group"
                    ));
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(format!(
                "`ranking` leaves out response {missing}: every response belongs to one group (tie it with others, or drop it from `responses`)"
            ));
        }
        Ok(())
    }

    /// Every preference the ranking implies, better group by better group: each member of a
    /// better group over each member of every worse group. Ties give no pair, so a ranking of
    /// K responses with no ties gives K(K-1)/2 pairs.
    pub fn pairs(&self) -> Vec<Pair> {
        let mut out = Vec::new();
        for (g, better) in self.ranking.iter().enumerate() {
            for worse in &self.ranking[g + 1..] {
                for &chosen in better {
                    out.extend(worse.iter().map(|&rejected| Pair { chosen, rejected }));
                }
            }
        }
        out
    }
}

/// Parses and checks one line of `rankings.jsonl`.
pub fn parse_line(line: &str) -> Result<Ranking, String> {
    let r: Ranking = serde_json::from_str(line).map_err(|e| {
        format!("not a ranking record ({e}); expected {{\"prompt\", \"responses\", \"ranking\"}}")
    })?;
    r.check()?;
    Ok(r)
}

/// Reads a `rankings.jsonl` file; blank lines are skipped. The first bad record is an error
/// naming the file and its line.
pub fn read(path: &Path) -> Result<Vec<Ranking>, RankingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| RankingsError::Io { path: path.to_path_buf(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|message| RankingsError::Record {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            })
        })
        .collect()
}

/// Reads the rankings of a `rankings` artifact (its [`FILE`]).
pub fn read_dir(dir: &Path) -> Result<Vec<Ranking>, RankingsError> {
    read(&dir.join(FILE))
}

/// Writes rankings, one JSON line each, in the form [`read`] reads.
pub fn write(mut w: impl Write, rankings: &[Ranking]) -> io::Result<()> {
    for r in rankings {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(n: usize, groups: &[&[usize]]) -> Ranking {
        Ranking {
            prompt: "p".into(),
            responses: (0..n).map(|i| format!("r{i}")).collect(),
            ranking: groups.iter().map(|g| g.to_vec()).collect(),
        }
    }

    fn pairs(r: &Ranking) -> Vec<(usize, usize)> {
        r.pairs().iter().map(|p| (p.chosen, p.rejected)).collect()
    }

    #[test]
    fn a_strict_order_gives_every_pair_once() {
        let r = ranking(4, &[&[2], &[0], &[3], &[1]]);
        assert_eq!(pairs(&r), vec![(2, 0), (2, 3), (2, 1), (0, 3), (0, 1), (3, 1)]);
    }

    #[test]
    fn ties_give_no_pair_between_them() {
        // [[2], [0, 3], [1]]: 2 beats 0, 3 and 1; 0 and 3 are tied and both beat 1.
        let r = ranking(4, &[&[2], &[0, 3], &[1]]);
        assert_eq!(pairs(&r), vec![(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]);
        // All tied: nothing to learn.
        assert!(ranking(3, &[&[0, 1, 2]]).pairs().is_empty());
        // Two tied groups of two: the four cross pairs.
        assert_eq!(pairs(&ranking(4, &[&[1, 3], &[0, 2]])), vec![(1, 0), (1, 2), (3, 0), (3, 2)]);
    }

    #[test]
    fn a_preference_pair_is_a_two_response_ranking() {
        let r = Ranking::preference("q", "good", "bad");
        assert_eq!(r.responses, vec!["good", "bad"]);
        assert_eq!(r.pairs(), vec![Pair { chosen: 0, rejected: 1 }]);
        r.check().unwrap();
    }

    #[test]
    fn checks_that_groups_partition_the_responses() {
        let err = |r: Ranking| r.check().unwrap_err();
        assert!(
            err(ranking(3, &[&[0], &[3]])).contains("names response 3, but there are 3 responses")
        );
        assert!(err(ranking(3, &[&[0, 1], &[1, 2]])).contains("names response 1 twice"));
        assert!(err(ranking(3, &[&[0], &[2]])).contains("leaves out response 1"));
        assert!(err(ranking(2, &[&[0], &[], &[1]])).contains("group 1 is empty"));
        assert!(err(ranking(0, &[])).contains("`responses` is empty"));
    }

    #[test]
    fn write_then_read_gives_the_same_rankings() {
        let dir = tempfile::tempdir().unwrap();
        let rs =
            vec![ranking(3, &[&[1], &[0, 2]]), Ranking::preference("q \"quoted\"\n", "a", "b")];
        let mut buf = Vec::new();
        write(&mut buf, &rs).unwrap();
        std::fs::write(dir.path().join(FILE), &buf).unwrap();
        assert_eq!(read_dir(dir.path()).unwrap(), rs);
        assert_eq!(String::from_utf8(buf).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_bad_record_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let good = r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [[1], [0]]}"#;
        let cases = [
            (
                r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [[2], [0]]}"#,
                "names response 2",
            ),
            (r#"{"prompt": "p", "responses": ["a", "b"]}"#, "missing field `ranking`"),
            (
                r#"{"prompt": "p", "responses": ["a"], "ranking": [[0]], "extra": 1}"#,
                "unknown field `extra`",
            ),
            ("not json", "not a ranking record"),
        ];
        for (bad, want) in cases {
            std::fs::write(&path, format!("{good}\n\n{bad}\n{good}\n")).unwrap();
            let e = read(&path).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, RankingsError::Record { line: 3, .. }), "{msg}");
            assert!(msg.starts_with(&format!("{}:3: ", path.display())), "{msg}");
            assert!(msg.contains(want), "{msg} should say {want}");
        }
        let missing = read(&dir.path().join("nope.jsonl")).unwrap_err();
        assert!(
            matches!(missing, RankingsError::Io { .. })
                && missing.to_string().contains("nope.jsonl"),
            "{missing}"
        );
    }
}
