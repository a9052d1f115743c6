//! `hone cache ls | gc | verify`.

use crate::support::{Ws, ids};

fn two_stage() -> Ws {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        "vars: { n: 1 }\nstages:\n  a:\n    uses: command\n    with: { cmd: \"seq ${vars.n} > $HONE_OUT/a\" }\n  b:\n    uses: command\n    inputs: { x: a }\n    with: { cmd: \"wc -l < $HONE_IN_x/a > $HONE_OUT/b\" }\n",
    );
    ws
}

#[test]
fn verify_catches_a_flipped_byte_and_the_next_run_recomputes_it() {
    let ws = two_stage();
    ws.hone(&["run"]).ok();
    ws.hone(&["cache", "verify"]).ok().stdout_has("2 ok, 0 corrupt");
    // Flip one byte of a's output inside the store.
    let v: serde_json::Value =
        serde_json::from_str(&ws.hone(&["show", "a", "--json"]).ok().stdout).unwrap();
    let file = std::path::PathBuf::from(v["output"].as_str().unwrap()).join("a");
    let mut perm = std::fs::metadata(&file).unwrap().permissions();
    assert!(perm.readonly(), "stored files are read-only");
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&file, perm).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let out = ws.hone(&["cache", "verify"]).code(1);
    assert!(
        out.stdout.contains("corrupt:")
            && out.stdout.contains("stage `a`")
            && out.stdout.contains("1 corrupt"),
        "{}",
        out.stdout
    );
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.ran(), ids(&["a"]));
    // a reproduced the right bytes, so b stays cached.
    assert_eq!(out.cached(), ids(&["b"]));
    ws.hone(&["cache", "verify"]).ok().stdout_has("0 corrupt");
}

#[test]
fn gc_removes_only_what_no_current_stage_uses() {
    let ws = two_stage();
    ws.hone(&["run"]).ok();
    ws.hone(&["run", "-s", "vars.n=3"]).ok();
    assert_eq!(ws.objects(), 4);
    let ls = ws.hone(&["cache", "ls"]).ok().stdout;
    assert_eq!(ls.lines().count(), 4, "{ls}");
    ws.hone(&["cache", "gc", "--dry-run"]).ok().stdout_has("would remove 2 object(s)");
    assert_eq!(ws.objects(), 4);
    ws.hone(&["cache", "gc"]).ok().stdout_has("removed 2 object(s)");
    assert_eq!(ws.objects(), 2);
    // The current results are still cached.
    assert_eq!(ws.hone(&["run", "-s", "vars.n=3"]).ok().cached(), ids(&["a", "b"]));
    assert_eq!(ws.hone(&["run"]).ok().ran(), ids(&["a", "b"]));
}

#[test]
fn cache_commands_need_a_store() {
    let ws = Ws::new();
    ws.hone(&["cache", "ls"]).code(4).stderr_has("no hone store");
}
