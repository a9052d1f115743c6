//! A corpus of malformed pipelines: `hone run` must refuse each before anything runs (exit
//! code 3, nothing stored), with the right message at the right file:line:col, and no panic.

use crate::support::Ws;

struct Case {
    name: &'static str,
    yaml: &'static str,
    flags: &'static [&'static str],
    message: &'static str,
    location: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "bad indentation",
        yaml: "stages:\n  a:\n    uses: command\n   with: {}\n",
        flags: &[],
        message: "invalid YAML",
        location: "p.yaml:4:8",
    },
    Case {
        name: "unclosed flow mapping",
        yaml: "stages:\n  a:\n    uses: command\n    with: { cmd: \"x\"\n",
        flags: &[],
        message: "invalid YAML: while parsing a flow mapping",
        location: "p.yaml:5:1",
    },
    Case {
        name: "unknown top-level key",
        yaml: "sed: 1\nstages:\n  a: { uses: command, with: { cmd: x } }\n",
        flags: &[],
        message: "unknown key `sed` in a pipeline",
        location: "p.yaml:1:1",
    },
    Case {
        name: "seed is not an integer",
        yaml: "seed: abc\nstages:\n  a: { uses: command, with: { cmd: x } }\n",
        flags: &[],
        message: "`seed` must be a non-negative integer",
        location: "p.yaml:1:7",
    },
    Case {
        name: "unknown stage kind",
        yaml: "stages:\n  a:\n    uses: comand\n",
        flags: &[],
        message: "unknown stage kind `comand`",
        location: "p.yaml:3:11",
    },
    Case {
        name: "missing uses",
        yaml: "stages:\n  a:\n    with: { cmd: x }\n",
        flags: &[],
        message: "stage `a` has no `uses:`",
        location: "p.yaml:2:3",
    },
    Case {
        name: "unknown param",
        yaml: "stages:\n  a:\n    uses: command\n    with: { cmd: x, cmdd: y }\n",
        flags: &[],
        message: "unknown field `cmdd`",
        location: "p.yaml:4:21",
    },
    Case {
        name: "ill-typed param",
        yaml: "stages:\n  a:\n    uses: command\n    with:\n      cmd: [1, 2]\n",
        flags: &[],
        message: "invalid type: sequence, expected a string (at `cmd`)",
        location: "p.yaml:5:12",
    },
    Case {
        name: "missing param",
        yaml: "stages:\n  a:\n    uses: command\n    with: {}\n",
        flags: &[],
        message: "missing field `cmd`",
        location: "p.yaml:4:11",
    },
    Case {
        name: "unknown input stage",
        yaml: "stages:\n  a:\n    uses: command\n    with: { cmd: x }\n    inputs: { x: nope }\n",
        flags: &[],
        message: "input `x` names unknown stage `nope`",
        location: "p.yaml:5:18",
    },
    Case {
        name: "unknown output port",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x } }\n  b:\n    uses: command\n    with: { cmd: x }\n    inputs: { x: a.nope }\n",
        flags: &[],
        message: "stage `a` has no output port `nope`",
        location: "p.yaml:6:18",
    },
    Case {
        name: "duplicate stage id",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x } }\n  a: { uses: command, with: { cmd: y } }\n",
        flags: &[],
        message: "duplicate stage id `a`",
        location: "p.yaml:3:3",
    },
    Case {
        name: "cycle",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x }, inputs: { i: b } }\n  b: { uses: command, with: { cmd: x }, inputs: { i: c } }\n  c: { uses: command, with: { cmd: x }, inputs: { i: a } }\n",
        flags: &[],
        message: "cycle between stages: a → b → c",
        location: "p.yaml:2:3",
    },
    Case {
        name: "self cycle",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x }, inputs: { i: a } }\n",
        flags: &[],
        message: "cycle between stages: a",
        location: "p.yaml:2:3",
    },
    Case {
        name: "unknown var",
        yaml: "vars: { n: 1 }\nstages:\n  a: { uses: command, with: { cmd: \"echo ${vars.m}\" } }\n",
        flags: &[],
        message: "unknown var `m`",
        location: "p.yaml:3:36",
    },
    Case {
        name: "duplicate param key",
        yaml: "stages:\n  a:\n    uses: command\n    with: { cmd: x, cmd: y }\n",
        flags: &[],
        message: "duplicate key `cmd`",
        location: "p.yaml:4:21",
    },
    Case {
        name: "stage is not a mapping",
        yaml: "stages:\n  a: 5\n",
        flags: &[],
        message: "stage `a` must be a mapping, found a number",
        location: "p.yaml:2:6",
    },
    Case {
        name: "override of an unknown stage",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x } }\n",
        flags: &["-s", "stages.nope.with.cmd=x"],
        message: "there is no `nope` in `stages`",
        location: "command line: -s stages.nope.with.cmd=x",
    },
    Case {
        name: "override with the wrong type",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x } }\n",
        flags: &["-s", "stages.a.with.deps=5"],
        message: "expected a sequence (at `deps`)",
        location: "command line: -s stages.a.with.deps=5",
    },
    Case {
        name: "inputs not a mapping",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x }, inputs: 5 }\n",
        flags: &[],
        message: "`inputs` must be a mapping",
        location: "p.yaml:2:49",
    },
    Case {
        name: "invalid stage id",
        yaml: "stages:\n  a.b: { uses: command, with: { cmd: x } }\n",
        flags: &[],
        message: "stage id `a.b` may only contain",
        location: "p.yaml:2:3",
    },
    Case {
        name: "filters on a kind without filters",
        yaml: "stages:\n  a:\n    uses: command\n    with: { cmd: x }\n    filters: [ { builtin: c4 } ]\n",
        flags: &[],
        message: "stage kind `command` takes no `filters`",
        location: "p.yaml:5:5",
    },
    Case {
        name: "dep outside the workspace",
        yaml: "stages:\n  a:\n    uses: command\n    with: { cmd: x, deps: [ok.txt, ../secret] }\n",
        flags: &[],
        message: "must be a path inside the workspace",
        location: "p.yaml:4:36",
    },
    Case {
        name: "no stages",
        yaml: "name: x\n",
        flags: &[],
        message: "the pipeline has no `stages:`",
        location: "p.yaml:1:1",
    },
    Case {
        name: "misspelt stage key",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x }, input: { x: a } }\n",
        flags: &[],
        message: "unknown key `input` in stage `a`",
        location: "p.yaml:2:41",
    },
    Case {
        name: "input name not an identifier",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x } }\n  b: { uses: command, with: { cmd: x }, inputs: { my-in: a } }\n",
        flags: &[],
        message: "input name `my-in` must be an identifier",
        location: "p.yaml:3:51",
    },
    Case {
        name: "port type mismatch",
        yaml: "stages:\n  c: { uses: ingest, with: { source: builtin:tinyworld/pretrain } }\n  t: { uses: tokenizer, inputs: { corpus: c } }\n  u: { uses: tokenizer, inputs: { corpus: t } }\n",
        flags: &[],
        message: "input `corpus` of `u` expects a corpus, but `t` (tokenizer) gives a tokenizer",
        location: "p.yaml:4:43",
    },
    Case {
        name: "plain-text corpus into sft",
        yaml: "stages:\n  text: { uses: ingest, with: { source: builtin:tinyworld/pretrain } }\n  tok: { uses: tokenizer, inputs: { corpus: text } }\n  base: { uses: pretrain, inputs: { tokenizer: tok } }\n  sft: { uses: sft, inputs: { model: base, data: text } }\n",
        flags: &[],
        message: "input `data` of `sft` expects a chat-data, but `text` (ingest) gives a corpus",
        location: "p.yaml:5:50",
    },
    Case {
        name: "chat corpus as evaluation prompts",
        yaml: "stages:\n  chats: { uses: ingest, with: { source: notes.jsonl, format: chat } }\n  tok: { uses: tokenizer, inputs: { corpus: chats } }\n  base: { uses: pretrain, inputs: { tokenizer: tok } }\n  eval: { uses: evaluate, inputs: { models: [base], prompts: chats } }\n",
        flags: &[],
        message: "input `prompts` of `eval` expects a prompts, but `chats` (ingest) gives a chat-data",
        location: "p.yaml:5:62",
    },
    Case {
        name: "corpus of unknown format into sft",
        yaml: "stages:\n  chats: { uses: ingest, with: { source: chats.jsonl } }\n  base: { uses: command, with: { cmd: x } }\n  sft: { uses: sft, inputs: { model: base, data: chats } }\n",
        flags: &[],
        message: "add `format: chat` to this ingest stage's `with:`",
        location: "p.yaml:4:50",
    },
    Case {
        name: "unknown built-in data set",
        yaml: "stages:\n  c:\n    uses: ingest\n    with: { source: builtin:tinyworld/pretrian }\n",
        flags: &[],
        message: "unknown built-in data set `builtin:tinyworld/pretrian` (did you mean `tinyworld/pretrain`?)",
        location: "p.yaml:4:21",
    },
    Case {
        name: "unknown filter",
        yaml: "stages:\n  c:\n    uses: ingest\n    with: { source: a.txt }\n    filters:\n      - builtin: dedup-exakt\n",
        flags: &[],
        message: "unknown built-in filter `dedup-exakt`",
        location: "p.yaml:6:16",
    },
    Case {
        name: "limits on a built-in filter",
        yaml: "stages:\n  c:\n    uses: ingest\n    with: { source: a.txt }\n    filters:\n      - builtin: dedup-exact\n        limits: { batch_size: 8 }\n",
        flags: &[],
        message: "`limits` applies to `wasm:` filters only (at `filters[0]`)",
        location: "p.yaml:6:16",
    },
    Case {
        name: "override through a scalar",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x } }\n",
        flags: &["-s", "stages.a.uses.x=1"],
        message: "`stages.a.uses` is a single value, not a mapping",
        location: "command line: -s stages.a.uses.x=1",
    },
    Case {
        name: "override without a value",
        yaml: "stages:\n  a: { uses: command, with: { cmd: x } }\n",
        flags: &["-s", "stages.a.with.cmd"],
        message: "is not of the form key.path=value",
        location: "command line: -s stages.a.with.cmd",
    },
    Case {
        name: "unclosed interpolation",
        yaml: "vars: { n: 1 }\nstages:\n  a: { uses: command, with: { cmd: \"echo ${vars.n\" } }\n",
        flags: &[],
        message: "unclosed `${` in `echo ${vars.n`",
        location: "p.yaml:3:36",
    },
    Case {
        name: "reference that is not a var",
        yaml: "stages:\n  a: { uses: command, with: { cmd: \"echo ${seed}\" } }\n",
        flags: &[],
        message: "unknown reference `${seed}`",
        location: "p.yaml:2:36",
    },
];

#[test]
fn every_malformed_pipeline_is_rejected_with_its_location() {
    let mut failures = Vec::new();
    for c in CASES {
        let ws = Ws::new();
        ws.write("p.yaml", c.yaml);
        let mut args = vec!["run", "p.yaml"];
        args.extend_from_slice(c.flags);
        let out = ws.hone(&args);
        let located = format!("--> {}", c.location);
        if out.code != 3
            || !out.stderr.contains(c.message)
            || !out.stderr.contains(&located)
            || out.stderr.contains("panicked")
        {
            failures.push(format!(
                "[{}] exit {}; want `{}` at `{}`; got:\n{}",
                c.name, out.code, c.message, c.location, out.stderr
            ));
        }
        // `run` stopped before anything ran: nothing was stored.
        if ws.objects() > 0
            || std::fs::read_dir(ws.path().join(".hone/keys")).is_ok_and(|mut d| d.next().is_some())
        {
            failures.push(format!("[{}] something was stored", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn all_problems_are_reported_at_once_with_help() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    uses: comand\n  b:\n    uses: command\n    with: { cmd: x, env: 3 }\n    inputs: { i: z }\n",
    );
    let out = ws.hone(&["run", "p.yaml"]).code(3);
    let e = &out.stderr;
    assert!(
        e.contains("unknown stage kind `comand`") && e.contains("did you mean `command`?"),
        "{e}"
    );
    assert!(e.contains("p.yaml:6:26"), "{e}");
    assert!(e.contains("input `i` names unknown stage `z`") && e.contains("3 problems"), "{e}");
    assert!(e.contains("3 |     uses: comand\n  |           ^^^^^^"), "{e}");
}

#[test]
fn a_missing_pipeline_file_is_a_clear_error() {
    let ws = Ws::new();
    ws.hone(&["run", "nope.yaml"]).code(3).stderr_has("cannot read pipeline file `nope.yaml`");
}

#[test]
fn bad_flags_are_usage_errors() {
    let ws = Ws::new();
    ws.hone(&["run", "--jobs", "many"]).code(2).stderr_has("invalid value 'many'");
    ws.hone(&["frobnicate"]).code(2).stderr_has("unrecognized subcommand");
}
