#!/usr/bin/env python3
"""Orchestration benchmark: hone vs DVC on the same pipelines of trivial `cat` stages.

usage: bench/engine.py [--sizes 10,100,1000,10000] [--dvc-sizes 10,100] [--shapes chain,fan]
                       [--hash-gib 1] [--out results.json]

For each shape (chain: s{i} reads s{i-1}; fan: s{1..N-1} read s0) and size N it measures, in
wall seconds: a cold run, a no-op run (median of 5), `plan` (median of 3; DVC: `status`), and a
rerun after changing one param of the last stage. DVC runs on the pipelines that
../shared/bench/dvc_gen.py writes (set DVC=/path/to/dvc; skipped when not installed) at the sizes
in --dvc-sizes. Then it hashes a --hash-gib GiB file with `hone digest` and `b3sum`.
Ratios hone/DVC and hone/b3sum are printed; lower is better for hone.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HONE = os.environ.get("HONE_BIN", os.path.join(ROOT, "target", "release", "hone"))  # HONE_BIN: compare two builds
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "bench")
DVC = os.environ.get("DVC", shutil.which("dvc") or "/tmp/dvc/bin/dvc")


def timed(cmd, cwd, env=None):
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)} in {cwd}\n{r.stderr.decode()[-2000:]}")
    return dt


def median(f, n):
    return statistics.median(f() for _ in range(n))


def hone_pipeline(d, n, shape):
    """The hone twin of dvc_gen.py's pipeline: same commands, same graph, p_last as a var."""
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    with open(os.path.join(d, "input.txt"), "w") as f:
        f.write("hello\n")
    lines = ["name: bench", "seed: 1", "vars: { p_last: 0 }", "stages:"]
    for i in range(n):
        if i == 0:
            lines.append("  s0: { uses: command, with: { cmd: 'cat input.txt > $HONE_OUT/out.txt && echo s0 >> $HONE_OUT/out.txt', deps: [input.txt] } }")
            continue
        src = f"s{i-1}" if shape == "chain" else "s0"
        cmd = f"cat $HONE_IN_x/out.txt > $HONE_OUT/out.txt && echo s{i} >> $HONE_OUT/out.txt"
        if i == n - 1:
            cmd += " && echo p_last=${vars.p_last} >> $HONE_OUT/out.txt"
        lines.append(f"  s{i}: {{ uses: command, inputs: {{ x: {src} }}, with: {{ cmd: '{cmd}' }} }}")
    with open(os.path.join(d, "pipeline.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def spawn_floor(d, n):
    """The same n shell commands run one after another by bash: the process start-up floor."""
    script = f"for i in $(seq {n}); do sh -c 'cat input.txt > out.txt && echo s >> out.txt'; done"
    return timed(["bash", "-c", script], d)


def bench_hone(d, n, shape):
    hone_pipeline(d, n, shape)
    run = lambda *a: timed([HONE, "run", *a], d)
    r = {"floor": spawn_floor(d, n), "cold": run(), "noop": median(lambda: run(), 5)}
    r["plan"] = median(lambda: timed([HONE, "plan"], d), 3)
    r["change_last"] = run("-s", "vars.p_last=1")
    return r


def bench_dvc(d, n, shape):
    subprocess.run([sys.executable, os.path.join(SHARED, "dvc_gen.py"), d, str(n), shape], check=True,
                   env={**os.environ, "DVC": DVC})
    repro = lambda: timed([DVC, "repro", "-q"], d)
    r = {"cold": repro(), "noop": median(repro, 3)}
    r["plan"] = median(lambda: timed([DVC, "status", "-q"], d), 3)
    with open(os.path.join(d, "params.yaml"), "w") as f:
        f.write("p_last: 1\n")
    r["change_last"] = repro()
    return r


def bench_hash(gib, work):
    path = os.path.join(work, "big.bin")
    with open(path, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(int(gib * 1024)):
            f.write(chunk)
    b3 = shutil.which("b3sum")
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL)  # into the page cache
    out = {"hone": median(lambda: timed([HONE, "digest", path], work), 5)}
    if b3:
        out["b3sum"] = median(lambda: timed([b3, path], work), 5)
    os.remove(path)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000,10000")
    ap.add_argument("--dvc-sizes", default="10,100")
    ap.add_argument("--shapes", default="chain,fan")
    ap.add_argument("--hash-gib", type=float, default=1.0)
    ap.add_argument("--work", default="/tmp/hone-bench")
    ap.add_argument("--out")
    a = ap.parse_args()
    if not os.path.exists(HONE):
        sys.exit("build first: cargo build --release")
    have_dvc = os.path.exists(DVC)
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "rows": []}
    print(f"{'shape':6} {'N':>6} {'tool':5} {'cold':>9} {'noop':>9} {'plan':>9} {'change':>9}   (cold/floor)")
    for shape in a.shapes.split(","):
        for n in map(int, a.sizes.split(",")):
            row = {"shape": shape, "n": n, "hone": bench_hone(os.path.join(a.work, f"hone-{shape}-{n}"), n, shape)}
            h = row["hone"]
            print(f"{shape:6} {n:>6} {'hone':5} {h['cold']:9.3f} {h['noop']:9.3f} {h['plan']:9.3f} {h['change_last']:9.3f}   ({h['cold'] / h['floor']:.2f} of a {h['floor']:.3f}s floor)", flush=True)
            if have_dvc and str(n) in a.dvc_sizes.split(","):
                v = row["dvc"] = bench_dvc(os.path.join(a.work, f"dvc-{shape}-{n}"), n, shape)
                print(f"{shape:6} {n:>6} {'dvc':5} {v['cold']:9.3f} {v['noop']:9.3f} {v['plan']:9.3f} {v['change_last']:9.3f}", flush=True)
                ratio = {k: h[k] / v[k] for k in v}
                row["ratio"] = ratio
                print(f"{shape:6} {n:>6} {'ratio':5} " + " ".join(f"{ratio[k]:9.4f}" for k in ("cold", "noop", "plan", "change_last")), flush=True)
            results["rows"].append(row)
    if a.hash_gib > 0:
        os.makedirs(a.work, exist_ok=True)
        hh = results["hash"] = bench_hash(a.hash_gib, a.work)
        line = f"hash {a.hash_gib} GiB: hone {hh['hone']:.3f}s"
        if "b3sum" in hh:
            line += f", b3sum {hh['b3sum']:.3f}s, ratio {hh['hone'] / hh['b3sum']:.2f}"
        print(line)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
