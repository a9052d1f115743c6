//! The same bytes on every machine. Every artifact of the smoke pipeline is the same when the
//! CPU reports another L1 data cache (the `gemm` crate derives its blocking from
//! `/sys/devices/system/cpu/*/cache/index0`; faked here by bind mounts in a private mount
//! namespace, which takes root) and with two worker threads instead of one; and every
//! artifact of a shorter pipeline is the same on a CPU with AVX2 + FMA and no AVX-512
//! (`qemu-x86_64 -cpu Haswell`, from Debian's `qemu-user`: the emulation is about 50 times
//! slower, hence the shorter pipeline).
//!
//! Before the matrix products followed one summation order (`stages/src/model/kernels/
//! product.rs`), the first test failed: the faked cache gave the smoke pipeline's `base`
//! model, and everything after it, other bytes.
//!
//! Both need parts outside Rust; without them they skip loudly, and with
//! `HONE_REQUIRE_PORTABLE=1` (`.ci/run`) they fail instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Out, Ws, system_part};

const REQUIRE: &str = "HONE_REQUIRE_PORTABLE";

/// A short pipeline over every kind that trains or generates: a pretrain whose products sum
/// more than 512 rows (12 × 64), SFT, sampling, rule ranking, a reward model, evaluation.
const TINY: &str = "name: portable
seed: 7
stages:
  corpus: { uses: ingest, with: { source: builtin:tinyworld/pretrain } }
  tokenizer: { uses: tokenizer, inputs: { corpus: corpus }, with: { kind: bpe, vocab_size: 300 } }
  base:
    uses: pretrain
    inputs: { tokenizer: tokenizer }
    with: { n_layer: 1, n_head: 2, n_embd: 32, block_size: 64, batch_size: 12, steps: 2, eval_every: 2, eval_iters: 1, warmup_steps: 1 }
  chat: { uses: ingest, with: { source: builtin:tinyworld/chat } }
  sft:
    uses: sft
    inputs: { model: base, data: chat }
    with: { batch_size: 4, steps: 2, eval_every: 2, eval_records: 4, warmup_steps: 1 }
  prompts: { uses: ingest, with: { source: builtin:tinyworld/prompts } }
  sample:
    uses: sample
    inputs: { model: sft, prompts: prompts }
    with: { k: 2, limit: 4, max_new_tokens: 8 }
  rank: { uses: rank, inputs: { candidates: sample }, with: { labeler: program } }
  reward:
    uses: reward
    inputs: { model: sft, rankings: rank }
    with: { batch_size: 2, steps: 2, eval_every: 2, warmup_steps: 1 }
  eval:
    uses: evaluate
    inputs: { models: [base, sft], prompts: prompts, shots: chat, reward: reward }
    with: { names: [base, sft], limit: 4, max_new_tokens: 8 }
";

/// Stage id → artifact digest, from a `hone run --json`'s `stage_finished` events.
fn artifacts(out: &Out) -> BTreeMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stage_finished")
        .map(|e| (e["stage"].as_str().unwrap().into(), e["artifact"].as_str().unwrap().into()))
        .collect()
}

#[track_caller]
fn assert_same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let differ: Vec<String> = a
        .iter()
        .filter(|(id, d)| b.get(*id) != Some(d))
        .map(|(id, d)| format!("{id}: {} vs {}", &d[..12], b.get(id).map_or("none", |x| &x[..12])))
        .collect();
    assert!(differ.is_empty() && a.len() == b.len(), "{what}: artifacts differ: {differ:?}");
}

fn index0() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/devices/system/cpu")
        .map(|d| d.flatten().map(|e| e.path().join("cache/index0")).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.join("size").is_file() && d.join("ways_of_associativity").is_file());
    dirs.sort();
    dirs
}

/// Whether this process may bind-mount over `/sys` in a private mount namespace.
fn can_fake_caches() -> bool {
    let Some(size) = index0().first().map(|d| d.join("size")) else { return false };
    let script = format!("mount --bind '{0}' '{0}'", size.display());
    Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `hone ARGS` in `ws` inside a private mount namespace where every CPU's L1 data cache
/// reads `size` and `ways` (files in `ws`).
fn hone_with_caches(ws: &Ws, size: &str, ways: &str, args: &[&str]) -> Out {
    ws.write("fake/size", &format!("{size}\n")).write("fake/ways", &format!("{ways}\n"));
    let (fs, fw) = (ws.path().join("fake/size"), ws.path().join("fake/ways"));
    let mut script = String::from("set -e\n");
    for d in index0() {
        let d = d.display();
        script += &format!(
            "mount --bind '{}' '{d}/size'\nmount --bind '{}' '{d}/ways_of_associativity'\n",
            fs.display(),
            fw.display()
        );
    }
    script += "exec \"$@\"\n";
    Out::from(ws.wrapped(&["unshare", "-m", "sh", "-c", &script, "sh"], args).output().unwrap())
}

fn smoke_yaml() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.yaml").display().to_string()
}

/// `base` sums 12 × 64 = 768 rows in its weight gradients: above 512, where the blocking
/// `gemm` derives from the cache differs between 48 KiB 12-way and 32 KiB 8-way.
const SMOKE_WIDER: [&str; 2] = ["-s", "stages.base.with.batch_size=12"];

#[test]
fn the_smoke_pipeline_has_the_same_bytes_whatever_the_cache_and_thread_count() {
    if !system_part(
        "a private mount namespace to fake the CPU's cache sizes in",
        can_fake_caches(),
        "run the tests as root on Linux (`unshare -m` and `mount --bind` over /sys)",
        REQUIRE,
    ) {
        return;
    }
    // Faked: whichever of the two common L1d shapes this machine does not report.
    let real = std::fs::read_to_string(index0()[0].join("size")).unwrap();
    let (size, ways) = if real.trim() == "32K" { ("48K", "12") } else { ("32K", "8") };

    let (a, b) = (Ws::new(), Ws::new());
    let yaml = smoke_yaml();
    fn run<'a>(yaml: &'a str, ws: &'a Ws) -> Vec<&'a str> {
        let mut args = vec!["run", yaml, "--json", "--workspace"];
        args.push(ws.path().to_str().unwrap());
        args.extend(SMOKE_WIDER);
        args
    }
    let native = artifacts(&a.hone(&run(&yaml, &a)).ok());
    assert_eq!(native.len(), 12, "every smoke stage ran: {native:?}");

    let mut args = run(&yaml, &b);
    let threads: Vec<String> = ["base", "sft", "sample", "reward", "ppo", "eval"]
        .iter()
        .map(|s| format!("stages.{s}.with.threads=2"))
        .collect();
    for t in &threads {
        args.extend(["-s", t.as_str()]);
    }
    let faked = artifacts(&hone_with_caches(&b, size, ways, &args).ok());
    assert_same(&native, &faked, &format!("L1d {size} {ways}-way, 2 threads"));
}

fn qemu_haswell() -> bool {
    Command::new("qemu-x86_64")
        .args(["-cpu", "Haswell", "/bin/true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_cpu_without_avx512_gives_the_same_bytes() {
    if !system_part(
        "qemu-x86_64 (user-mode emulation of an AVX2 + FMA CPU)",
        qemu_haswell(),
        "install Debian's qemu-user (`apt-get install qemu-user`)",
        REQUIRE,
    ) {
        return;
    }
    let (a, b) = (Ws::new(), Ws::new());
    a.write("pipeline.yaml", TINY);
    b.write("pipeline.yaml", TINY);
    let native = artifacts(&a.hone(&["run", "--json"]).ok());
    assert_eq!(native.len(), 10, "every stage ran: {native:?}");
    let emulated = artifacts(
        &Out::from(
            b.wrapped(&["qemu-x86_64", "-cpu", "Haswell"], &["run", "--json"]).output().unwrap(),
        )
        .ok(),
    );
    assert_same(&native, &emulated, "qemu-x86_64 -cpu Haswell");
}
