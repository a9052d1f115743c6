"""What the TRL parity checks share: the `hone` binary ($HONE_BIN, default
target/release/hone), the smoke pipeline's stages to build on, running a pipeline in a workspace,
and reading a stage's output and its first training step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HONE = Path(os.environ.get("HONE_BIN", REPO / "target" / "release" / "hone")).resolve()


def smoke_stages(names: list[str]) -> tuple[dict, dict]:
    """The smoke pipeline's stages `names` (its WASM filter paths made absolute), and the
    pipeline itself (for its seed and vars)."""
    smoke = yaml.safe_load((REPO / "pipelines" / "smoke.yaml").read_text())
    stages = {k: smoke["stages"][k] for k in names}
    for f in stages.get("corpus", {}).get("filters", []):
        if "wasm" in f:
            f["wasm"] = str((REPO / "pipelines" / f["wasm"]).resolve())
    return stages, smoke


def run(ws: Path, name: str, stages: dict, smoke: dict) -> None:
    """Writes `stages` as `ws/pipeline.yaml` (the smoke pipeline's seed and vars) and runs it."""
    if not HONE.exists():
        sys.exit(f"FAIL: no hone binary at {HONE}: cargo build --release")
    pipeline = {"name": name, "seed": smoke["seed"], "vars": smoke["vars"], "stages": stages}
    (ws / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    r = subprocess.run([str(HONE), "run", str(ws / "pipeline.yaml"), "--json"], cwd=ws, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: hone run exited {r.returncode}:\n{r.stderr[-3000:]}")


def output(ws: Path, stage: str) -> Path:
    """The output directory of `stage` of `ws/pipeline.yaml`."""
    r = subprocess.run([str(HONE), "show", stage, str(ws / "pipeline.yaml"), "--json"], capture_output=True, text=True,
                       check=True)
    return Path(json.loads(r.stdout)["output"])


def first_step(out: Path) -> dict:
    """The first training step's line of `out/metrics.jsonl` (loss, grad_norm, ...)."""
    for line in (out / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if "grad_norm" in m:
            return m
    sys.exit(f"FAIL: no training step in {out}/metrics.jsonl")
