//! Data sets that ship with hone, named in an `ingest` source as `builtin:NAME`, so a
//! pipeline runs on a fresh machine without downloading anything.
//!
//! Each is listed once in [`BUILTINS`] with a version: bump it when the generator's output
//! changes, because the version (not the generated data) enters the `ingest` stage key.
//! Generators are deterministic in the pipeline seed and return records in any of the input
//! formats `ingest` reads (see [`super::formats`]).

use serde_json::Value;

use super::formats::Format;

/// A built-in data set.
pub struct Builtin {
    pub name: &'static str,
    pub version: u32,
    /// The format of its records: it types an `ingest` of it before it runs.
    pub format: Format,
    pub records: fn(seed: u64) -> Result<Vec<Value>, String>,
}

/// Every built-in data set, in one list.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "tinyworld/pretrain",
        version: TINYWORLD_VERSION,
        format: Format::Text,
        records: |seed| tinyworld("pretrain", seed),
    },
    Builtin {
        name: "tinyworld/chat",
        version: TINYWORLD_VERSION,
        format: Format::Chat,
        records: |seed| tinyworld("chat", seed),
    },
    Builtin {
        name: "tinyworld/prompts",
        version: TINYWORLD_VERSION,
        format: Format::Prompt,
        records: |seed| tinyworld("prompts", seed),
    },
    Builtin {
        name: "tinyworld/rl-prompts",
        version: TINYWORLD_VERSION,
        format: Format::Prompt,
        records: |seed| tinyworld("rl-prompts", seed),
    },
];

/// Bump when `crate::tinyworld` generates different records (the golden test below says so).
const TINYWORLD_VERSION: u32 = 4;

fn tinyworld(name: &str, seed: u64) -> Result<Vec<Value>, String> {
    crate::tinyworld::dataset(name, seed)
        .ok_or_else(|| format!("tinyworld has no data set `{name}`"))
}

/// Data sets that exist only in tests, to exercise `builtin:` sources.
#[cfg(test)]
const TEST_BUILTINS: &[Builtin] = &[Builtin {
    name: "test/numbers",
    version: 1,
    format: Format::Text,
    records: |seed| {
        Ok((0..20)
            .map(|i| serde_json::json!({ "text": format!("Number {i} of seed {seed}.") }))
            .collect())
    },
}];
#[cfg(not(test))]
const TEST_BUILTINS: &[Builtin] = &[];

fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().chain(TEST_BUILTINS).find(|b| b.name == name)
}

/// The records of the built-in data set `name` for this seed; `None` if there is none of
/// that name.
pub fn builtin_records(name: &str, seed: u64) -> Option<Result<Vec<Value>, String>> {
    find(name).map(|b| (b.records)(seed))
}

/// The version of the built-in data set `name`.
pub fn builtin_version(name: &str) -> Option<u32> {
    find(name).map(|b| b.version)
}

/// The record format of the built-in data set `name`.
pub fn builtin_format(name: &str) -> Option<Format> {
    find(name).map(|b| b.format)
}

/// The names `builtin:` accepts.
pub fn known_names() -> Vec<&'static str> {
    BUILTINS.iter().chain(TEST_BUILTINS).map(|b| b.name).collect()
}

/// "unknown built-in data set" with the names there are.
pub fn unknown_message(name: &str) -> String {
    let names = known_names();
    let known = if names.is_empty() {
        "this build of hone has none".to_string()
    } else {
        format!(
            "known: {}",
            names.iter().map(|n| format!("`builtin:{n}`")).collect::<Vec<_>>().join(", ")
        )
    };
    let hint = hone_engine::suggest::did_you_mean(name, names.iter().copied())
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    format!("unknown built-in data set `builtin:{name}`{hint}; {known}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_name() {
        assert!(builtin_records("nope", 1).is_none());
        let r = builtin_records("test/numbers", 5).unwrap().unwrap();
        assert_eq!(r[3]["text"], "Number 3 of seed 5.");
        assert!(unknown_message("test/numbrs").contains("did you mean `test/numbers`"));
    }

    #[test]
    fn every_record_has_the_declared_format() {
        for b in BUILTINS.iter().chain(TEST_BUILTINS) {
            for r in (b.records)(7).unwrap() {
                let record = super::super::formats::from_value(r).unwrap();
                assert_eq!(record.format(), b.format, "builtin:{}", b.name);
            }
        }
    }

    /// The version, not the data, enters the stage key: pin the data of each version so a
    /// generator change that forgets to bump it fails here instead of serving stale caches.
    #[test]
    fn tinyworld_data_matches_its_version() {
        let mut h = blake3::Hasher::new();
        for name in
            ["tinyworld/pretrain", "tinyworld/chat", "tinyworld/prompts", "tinyworld/rl-prompts"]
        {
            for r in builtin_records(name, 1234).unwrap().unwrap() {
                h.update(r.to_string().as_bytes());
            }
        }
        let got = h.finalize().to_hex().to_string();
        let pinned = [
            (1, "c0e4a51bb48102c33a5daedf22bc46cc76dc2b1b06f9f5faaea015071b0ea025"),
            (2, "35408eec835db5f56b0098ff9b0a235a788d73db978a3098ed4e575b0d900eb0"),
            (3, "a1b5ca325c9f2e38a9042f4aa0c15fd2e660e064e00a7f1c05be4f54d5dd11de"),
            (4, "36808105c8769acbd70fe232ed748cc8536c7089ab463d1f4a8d32d38f8060b1"),
        ];
        let want = pinned.iter().find(|(v, _)| *v == TINYWORLD_VERSION).map(|(_, d)| *d);
        assert_eq!(
            Some(got.as_str()),
            want,
            "tinyworld's records changed: bump TINYWORLD_VERSION and pin the new digest"
        );
    }
}
