//! What a stage needs to run ([`Resources`]: cpus, memory, gpus, time). Where it runs is the
//! pipeline's `executor:` block ([`crate::executors::ExecutorSpec`]).
//!
//! A stage's resources come, field by field, from its `resources:` in the pipeline, else the
//! pipeline's `executor:` block, else its kind's defaults ([`crate::stage::Stage::resources`]).
//! They never enter a stage key: where and with how much a stage runs does not change what it
//! produces. The local executor ignores them; the Slurm executor turns them into `sbatch` flags.

use serde::{Deserialize, Serialize};

use crate::yaml::{Located, Node, PathSeg};

/// What one stage job asks the scheduler for. Unset fields fall back (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores (`sbatch --cpus-per-task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory, a number with an optional K/M/G/T suffix, e.g. `4G` (`sbatch --mem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// GPUs (`sbatch --gpus`); a cluster that counts them otherwise uses `gres:` in `executor:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Wall-clock limit: minutes (`90`), `30m`, `2h`, `1d`, or Slurm's `[D-]HH:MM:SS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl Resources {
    /// Each unset field taken from `fallback`.
    pub fn or(&self, fallback: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.or(fallback.cpus),
            memory: self.memory.clone().or_else(|| fallback.memory.clone()),
            gpus: self.gpus.or(fallback.gpus),
            time: self.time.clone().or_else(|| fallback.time.clone()),
        }
    }

    /// `cpus=2 memory=4G` (set fields only), for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.cpus {
            parts.push(format!("cpus={c}"));
        }
        if let Some(m) = &self.memory {
            parts.push(format!("memory={m}"));
        }
        if let Some(g) = self.gpus {
            parts.push(format!("gpus={g}"));
        }
        if let Some(t) = &self.time {
            parts.push(format!("time={t}"));
        }
        parts.join(" ")
    }

    /// What is wrong with them beyond their types, at paths under their mapping.
    pub(crate) fn problems(&self) -> Vec<(Vec<PathSeg>, String, Option<String>)> {
        let mut out = Vec::new();
        let at = |k: &str| vec![PathSeg::Key(k.to_string())];
        if self.cpus == Some(0) {
            out.push((at("cpus"), "`cpus` must be at least 1".to_string(), None));
        }
        if let Some(m) = &self.memory
            && slurm_memory(m).is_none()
        {
            out.push((
                at("memory"),
                format!("`memory: {m}` is not a size"),
                Some("write a number of megabytes or a size like `512M`, `4G`".to_string()),
            ));
        }
        if let Some(t) = &self.time
            && slurm_time(t).is_none()
        {
            out.push((
                at("time"),
                format!("`time: {t}` is not a duration"),
                Some("write minutes (`90`), `30m`, `2h`, `1d` or `D-HH:MM:SS`".to_string()),
            ));
        }
        out
    }
}

/// Memory in Slurm's `--mem` syntax (a number with an optional K/M/G/T suffix).
pub fn slurm_memory(m: &str) -> Option<String> {
    let m = m.trim();
    let (num, unit) = match m.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&m[..i], Some(c.to_ascii_uppercase())),
        _ => (m, None),
    };
    let unit = match unit {
        None => "",
        Some('K') => "K",
        Some('M') => "M",
        Some('G') => "G",
        Some('T') => "T",
        Some(_) => return None,
    };
    let n: u64 = num.parse().ok().filter(|&n| n > 0)?;
    Some(format!("{n}{unit}"))
}

/// A time limit in Slurm's `--time` syntax (`[D-]HH:MM:SS` or minutes).
pub fn slurm_time(t: &str) -> Option<String> {
    let t = t.trim();
    let minutes = |n: u64| Some(format!("{}-{:02}:{:02}:00", n / 1440, n / 60 % 24, n % 60));
    if let Ok(n) = t.parse::<u64>() {
        return (n > 0).then(|| minutes(n)).flatten();
    }
    for (suffix, mult) in [("m", 1), ("h", 60), ("d", 1440)] {
        if let Some(n) = t.strip_suffix(suffix).and_then(|n| n.parse::<u64>().ok()) {
            // Too many to count in minutes is not a duration (and would overflow).
            return (n > 0).then(|| n.checked_mul(mult).and_then(minutes)).flatten();
        }
    }
    // [D-]HH:MM:SS or MM:SS: digits and separators only, in Slurm's shapes.
    let (days, clock) = match t.split_once('-') {
        Some((d, c)) => (Some(d), c),
        None => (None, t),
    };
    if days.is_some_and(|d| d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let parts: Vec<&str> = clock.split(':').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| t.to_string())
}

/// Deserialise and check a `resources:` mapping; problems located in `node`.
pub(crate) fn parse_resources(node: &Node) -> Result<Resources, Vec<Located>> {
    let keys = "cpus, memory, gpus, time";
    let block = crate::yaml::block(node, keys)?;
    let typed: Resources =
        crate::yaml::from_node(&block).map_err(|e| crate::yaml::invalid(e, &block, keys))?;
    let problems = crate::yaml::located(&block, typed.problems());
    if problems.is_empty() { Ok(typed) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_memory_in_slurm_syntax() {
        assert_eq!(slurm_time("90").as_deref(), Some("0-01:30:00"));
        assert_eq!(slurm_time("30m").as_deref(), Some("0-00:30:00"));
        assert_eq!(slurm_time("2h").as_deref(), Some("0-02:00:00"));
        assert_eq!(slurm_time("1d").as_deref(), Some("1-00:00:00"));
        assert_eq!(slurm_time("1-12:00:00").as_deref(), Some("1-12:00:00"));
        assert_eq!(slurm_time("10:00").as_deref(), Some("10:00"));
        for bad in [
            "",
            "0",
            "soon",
            "1:2:3:4",
            "1h30",
            "-1:00:00",
            "abc:00",
            "18446744073709551615h",
            "99999999999999999d",
        ] {
            assert_eq!(slurm_time(bad), None, "{bad}");
        }
        assert_eq!(slurm_memory("4g").as_deref(), Some("4G"));
        assert_eq!(slurm_memory("512").as_deref(), Some("512"));
        for bad in ["", "0", "4X", "G", "1.5G"] {
            assert_eq!(slurm_memory(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_fall_back_one_by_one() {
        let stage = Resources { cpus: Some(4), ..Default::default() };
        let block = Resources { cpus: Some(1), memory: Some("8G".into()), ..Default::default() };
        let kind =
            Resources { memory: Some("1G".into()), time: Some("1h".into()), ..Default::default() };
        let r = stage.or(&block).or(&kind);
        assert_eq!(
            r,
            Resources {
                cpus: Some(4),
                memory: Some("8G".into()),
                gpus: None,
                time: Some("1h".into())
            }
        );
        assert_eq!(r.describe(), "cpus=4 memory=8G time=1h");
    }
}
