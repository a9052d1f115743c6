//! The README's commands, as written: every `hone …` line of its ```sh blocks runs through
//! `sh` (with `hone` the binary under test) in a scratch directory laid out like the
//! repository, where `pipeline.yaml` is the smoke pipeline (so `hone CMD` without a file name
//! finds it, as it finds the default pipeline in the repository) and `pipelines/` holds
//! commands.yaml and data.yaml.
//!
//! Covered elsewhere: the two commands (`cargo run --release -- run`, `cargo test --release
//! --workspace`) by `.ci/run`; `hone watch` by tests/cli/watch.rs, which runs it as written.

use std::path::Path;
use std::process::Command;

use crate::support::{Out, Ws, hone_bin};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// The `hone …` lines of the README's ```sh blocks, without their trailing comments.
fn commands(readme: &str) -> Vec<String> {
    let mut in_sh = false;
    let mut out = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        let cmd = line.split("  #").next().unwrap().trim();
        if in_sh && cmd.starts_with("hone ") {
            out.push(cmd.to_string());
        }
    }
    out
}

/// Runs `cmd` with `sh -c` in `ws`, `hone` being the binary under test; stdin is empty.
fn sh(ws: &Ws, cmd: &str) -> Out {
    let script = format!("hone() {{ \"$HONE_BIN\" \"$@\"; }}\n{cmd}");
    Out::from(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HONE_BIN", hone_bin())
            .env_remove("HONE_LOG")
            .current_dir(ws.path())
            .output()
            .unwrap(),
    )
}

/// A directory like the repository, with the smoke pipeline as `./pipeline.yaml`.
fn scratch() -> Ws {
    let ws = Ws::new();
    let plugins = format!("{}/plugins/", repo().display());
    let smoke = std::fs::read_to_string(repo().join("pipelines/smoke.yaml"))
        .unwrap()
        .replace("../plugins/", &plugins);
    ws.write("pipeline.yaml", &smoke);
    for f in ["commands.yaml", "data.yaml"] {
        ws.write(
            &format!("pipelines/{f}"),
            &std::fs::read_to_string(repo().join("pipelines").join(f)).unwrap(),
        );
    }
    // `pipelines/compare.yaml` in miniature: the smoke pipeline with `dpo` and `grpo` branches.
    let branches = "  dpo:\n    uses: dpo\n    inputs: { model: sft, rankings: rank }\n    with: { batch_size: 2, steps: 4, eval_every: 0, threads: 1 }\n  grpo:\n    uses: grpo\n    inputs: { model: sft, prompts: rl_prompts }\n    with: { reward_program: check_answer, num_generations: 4, rollouts: 8, batch_size: 8, steps: 2, max_new_tokens: 16, eval_prompts: 4, threads: 1 }\n  eval:\n";
    let compare = smoke
        .replacen("  eval:\n", branches, 1)
        .replace("models: [base, sft, ppo]", "models: [base, sft, ppo, dpo, grpo]")
        .replace("names: [base, sft, ppo]", "names: [base, sft, ppo, dpo, grpo]");
    assert!(compare.contains("[base, sft, ppo, dpo, grpo]"), "the smoke pipeline's eval changed");
    ws.write("pipelines/compare.yaml", &compare);
    let book: String = (0..40)
        .map(|i| format!("Chapter {i} begins on a quiet morning by the river.\n\n"))
        .collect();
    ws.write("book.txt", &book);
    ws
}

#[test]
fn every_readme_command_runs_as_written() {
    let readme = readme();
    let cmds = commands(&readme);
    // The tour: report, chat, a changed param planned then run, back to the file, watch.
    for step in [
        "hone report",
        "hone chat --stage sft --prompt",
        "hone plan -s stages.sft.with.lr=",
        "hone run -s stages.sft.with.lr=",
        "hone run",
        "hone chat --stage sft",
        "hone watch",
    ] {
        assert!(
            cmds.iter().any(|c| c.starts_with(step)),
            "the README's tour lacks `{step}`: {cmds:?}"
        );
    }
    let ws = scratch();
    // The main job, `cargo run --release -- run` in the repository.
    sh(&ws, "hone run").ok();
    for cmd in cmds.iter().filter(|c| *c != "hone watch") {
        let out = sh(&ws, cmd);
        assert_eq!(
            out.code, 0,
            "README command `{cmd}` failed:\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        );
        match cmd.as_str() {
            "hone report" => assert!(Path::new(out.stdout.trim()).is_file(), "{}", out.stdout),
            c if c.starts_with("hone plan -s stages.sft.with.lr=") => {
                // The output the README quotes under the command.
                let quoted = readme
                    .lines()
                    .skip_while(|l| !l.starts_with(c))
                    .skip(1)
                    .take_while(|l| l.starts_with("#   "));
                for line in quoted.map(|l| l.trim_start_matches("#   ")) {
                    assert!(
                        out.stdout.lines().any(|o| o.trim_end() == line),
                        "`{c}` does not print {line:?}:\n{}",
                        out.stdout
                    );
                }
            }
            c if c.starts_with("hone run -s stages.sft.with.lr=") => {
                assert!(
                    out.ran().contains(&"sft".to_string())
                        && out.ran().contains(&"eval".to_string()),
                    "{}",
                    out.stderr
                );
                assert!(out.cached().contains(&"base".to_string()), "{}", out.stderr);
            }
            "hone run" => assert!(
                out.ran().is_empty() && out.cached().contains(&"sft".to_string()),
                "back to the file's values: {}",
                out.stderr
            ),
            c if c.starts_with("hone chat --stage sft --prompt") => {
                assert!(!out.stdout.trim().is_empty())
            }
            _ => {}
        }
    }
    // Adding the README's WASM filter line to the corpus stage: corpus and all after it will run.
    let filter = readme
        .lines()
        .find(|l| l.trim_start().starts_with("- wasm: ../plugins/dist/pii-redact.wasm"))
        .expect("the README adds pii-redact");
    let filter = filter.replace("../plugins/", &format!("{}/plugins/", repo().display()));
    let yaml = ws.read("pipeline.yaml").replacen(
        "      - builtin: dedup-exact\n",
        &format!("      - builtin: dedup-exact\n{filter}\n"),
        1,
    );
    ws.write("pipeline.yaml", &yaml);
    let plan = sh(&ws, "hone plan --json").ok().plan();
    let runs = |id: &str| plan.iter().any(|(s, a, _)| s == id && a == "run");
    assert!(runs("corpus") && runs("tokenizer") && runs("sft") && !runs("chat"), "{plan:?}");
}

#[test]
fn readme_commands_are_found_without_their_comments() {
    let md = "```sh\nhone run   # all\n#   hone not this\n```\nhone outside\n```yaml\nhone no\n```\n```sh\nhone plan -s a=1  # why\n```\n";
    assert_eq!(commands(md), ["hone run", "hone plan -s a=1"]);
}
