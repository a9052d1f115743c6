//! The WASM filter benchmark (run by `bench/wasm-filters.sh`; results in
//! docs/benchmarks.md): documents/s and MB/s of the same filter logic compiled natively and
//! run as a sandboxed plugin at batch sizes 1, 64 and 1024 with the default limits on, plus
//! the first load (compile) against a cached load.
//!
//! The native side compiles the plugins' own logic files (`redact.rs`, `detect.rs`) into this
//! binary, so both sides run the very same source. The WASM side loads the components shipped
//! in `plugins/dist/` (checked against their sources by the `dist` test).
//!
//! Usage: plugin_bench [DOCS] [ROUNDS]   (defaults: 4096 documents of ~1 KB, 15 rounds)

// The guests' own files, formatted with their own workspace: `cargo fmt` here leaves them be
// (their built components in plugins/dist are pinned to their sources' digest).
#[rustfmt::skip]
#[path = "../../examples/pii-redact/src/redact.rs"]
mod redact;

#[rustfmt::skip]
#[path = "../../examples/lang-id/src/detect.rs"]
mod detect;

use std::path::Path;
use std::time::{Duration, Instant};

use hone_plugin_host::{CodeSource, Limits, PluginFilter, Verdict};

fn main() {
    let mut args = std::env::args().skip(1);
    let n_docs: usize = args.next().map_or(4096, |a| a.parse().expect("DOCS must be a number"));
    let rounds: usize = args.next().map_or(15, |a| a.parse().expect("ROUNDS must be a number"));
    // From the repository root (as bench/wasm-filters.sh runs it), else from the source tree.
    let dist = match Path::new("plugins/dist") {
        p if p.is_dir() => p.to_path_buf(),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist"),
    };
    let docs = corpus(n_docs);
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    println!(
        "corpus: {n_docs} documents, {:.2} MB; thread CPU time, fastest of {rounds} interleaved rounds; default limits (fuel on)\n",
        bytes as f64 / 1e6
    );

    println!("| filter | run | docs/s | MB/s | time vs native |");
    println!("|---|---|---:|---:|---:|");
    let redactor = redact::Redactor::new(serde_json::from_str("{}").unwrap()).unwrap();
    let native = || {
        refs.iter()
            .map(|d| match redactor.redact(d) {
                Some(t) => Verdict::Rewrite(t),
                None => Verdict::Keep,
            })
            .collect()
    };
    report("pii-redact", &dist.join("pii-redact.wasm"), "{}", &refs, bytes, rounds, native);

    let mut detector = detect::Detector::new(serde_json::from_str("{}").unwrap()).unwrap();
    let native = || {
        refs.iter()
            .map(|d| match detector.decide(d) {
                Some(r) => Verdict::Drop(r.to_string()),
                None => Verdict::Keep,
            })
            .collect()
    };
    report("lang-id", &dist.join("lang-id.wasm"), "{}", &refs, bytes, rounds, native);

    println!("\n| plugin | first load (compile) | cached load | of which code load |");
    println!("|---|---:|---:|---:|");
    for name in ["min-words", "pii-redact", "lang-id"] {
        let path = dist.join(format!("{name}.wasm"));
        let config = if name == "min-words" { r#"{"min_words": 5}"# } else { "{}" };
        let cache = tempfile::tempdir().expect("temp dir");
        let start = Instant::now();
        let f = PluginFilter::load(&path, config, Limits::default(), cache.path()).expect("load");
        let cold = start.elapsed();
        assert_eq!(f.load_report().code, CodeSource::Compiled);
        let mut warm = Vec::new();
        let mut code = Vec::new();
        for _ in 0..21 {
            let start = Instant::now();
            let f =
                PluginFilter::load(&path, config, Limits::default(), cache.path()).expect("load");
            warm.push(start.elapsed());
            assert_eq!(f.load_report().code, CodeSource::Cache);
            code.push(f.load_report().code_time);
        }
        println!(
            "| {name} | {} | {} | {} |",
            ms(cold),
            ms(median(&mut warm)),
            ms(median(&mut code))
        );
    }
}

/// Native vs WASM at each batch size, as table rows. Each run is timed in CPU time of this
/// thread (time spent descheduled on a busy machine does not count), the runs are interleaved
/// round by round and each reports its fastest round. WASM verdicts must equal native ones.
fn report(
    name: &str,
    wasm: &Path,
    config: &str,
    docs: &[&str],
    bytes: usize,
    rounds: usize,
    mut native: impl FnMut() -> Vec<Verdict>,
) {
    let cache = tempfile::tempdir().expect("temp dir");
    let sizes = [1, 64, 1024];
    let mut filters: Vec<PluginFilter> = sizes
        .iter()
        .map(|&batch_size| {
            PluginFilter::load(
                wasm,
                config,
                Limits { batch_size, ..Limits::default() },
                cache.path(),
            )
            .expect("load plugin")
        })
        .collect();
    let expected = native();
    for f in &mut filters {
        assert!(
            f.filter(docs).expect("filter") == expected,
            "{name}: WASM verdicts differ from native"
        );
    }
    let mut best = vec![Duration::MAX; 1 + sizes.len()];
    for _ in 0..rounds {
        let start = thread_cpu_time();
        std::hint::black_box(native());
        best[0] = best[0].min(thread_cpu_time() - start);
        for (i, f) in filters.iter_mut().enumerate() {
            let start = thread_cpu_time();
            std::hint::black_box(f.filter(docs).expect("filter"));
            best[i + 1] = best[i + 1].min(thread_cpu_time() - start);
        }
    }
    row(name, "native", docs.len(), bytes, best[0], best[0]);
    for (i, batch_size) in sizes.iter().enumerate() {
        row(name, &format!("wasm, batch {batch_size}"), docs.len(), bytes, best[i + 1], best[0]);
    }
}

fn row(name: &str, run: &str, n: usize, bytes: usize, t: Duration, native: Duration) {
    let s = t.as_secs_f64();
    println!(
        "| {name} | {run} | {:.0} | {:.1} | {:.2}× |",
        n as f64 / s,
        bytes as f64 / 1e6 / s,
        s / native.as_secs_f64()
    );
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `n` documents of about 1 KB: mostly English prose from a fixed vocabulary, every eighth
/// with an e-mail address and a phone number, every sixteenth in French. Deterministic.
fn corpus(n: usize) -> Vec<String> {
    const EN: &[&str] = &[
        "the",
        "model",
        "reads",
        "a",
        "corpus",
        "of",
        "text",
        "and",
        "it",
        "was",
        "trained",
        "with",
        "care",
        "on",
        "data",
        "that",
        "we",
        "filter",
        "for",
        "quality",
        "before",
        "tokenizing",
        "is",
        "this",
        "what",
        "they",
        "want",
    ];
    const FR: &[&str] = &[
        "le", "modèle", "lit", "un", "corpus", "de", "texte", "et", "il", "est", "très", "bon",
        "pour", "nous",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let words = if i % 16 == 5 { FR } else { EN };
            let mut doc = String::with_capacity(1100);
            while doc.len() < 1000 {
                doc.push_str(words[(next() % words.len() as u64) as usize]);
                doc.push(if next() % 12 == 0 { '.' } else { ' ' });
                if i % 8 == 3 && doc.len() > 500 && !doc.contains('@') {
                    doc.push_str(&format!(
                        "contact user{i}@example.org or +1 (555) {:03}-{:04} ",
                        i % 1000,
                        next() % 10_000
                    ));
                }
            }
            doc
        })
        .collect()
}
