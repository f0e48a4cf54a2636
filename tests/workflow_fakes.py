"""Helpers of the workflow tests: a copy of the workflow in a scratch folder (its own
`.snakemake/` metadata) and a stand-in `refine` command that only creates the files each
command line promises, so Snakemake's real rerun logic can be exercised in seconds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_REFINE = r'''#!{python}
"""Stand-in for `refine`: creates the outputs of the command line, computes nothing."""
import os
import sys
import time
from pathlib import Path

args = sys.argv[1:]


def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default


def touch(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("fake\n")


with open(Path(opt("--config")).with_name("fake_refine_calls.log"), "a") as log:
    log.write(" ".join(args) + "\n")
command = args[0]
if command == "train" and os.environ.get("FAKE_REFINE_SLOW") == "train":
    touch(Path(opt("--out")) / "final_metrics.json")  # a half-done job: output there, then killed
    time.sleep(600)
if command == "data":
    out, only = Path(opt("--out")), opt("--only")
    if only in (None, "tokenizer"):
        touch(out / "tokenizer" / "tokenizer.json")
    for split in ("pretrain", "midtrain", "heldout"):
        if only in (None, split):
            touch(out / f"{split}.npy")
            touch(out / f"{split}.json")
elif command == "eval-data":
    out, only = Path(opt("--out")), opt("--only")
    for part in ("niah", "qa_test", "qa_train"):
        if only in (None, part):
            touch(out / f"{part}.jsonl")
    if only in (None, "longbench"):
        touch(out / "longbench.summary.json")
    if only is None:
        touch(out / "summary.json")
elif command == "tracking":
    touch(opt("--marker"))
elif command == "train":
    touch(Path(opt("--out")) / "final_metrics.json")
elif command == "eval":
    run_dir = Path(opt("--model-dir")).parent
    model, run, root = run_dir.parent.name, run_dir.name, Path(opt("--out-root"))
    for suite in args[1].split(","):
        for ttt in opt("--ttt", "none").split(","):
            if suite == "ntp":
                touch(root / "ntp" / model / f"{run}.json")
            else:
                touch(root / suite / model / run / f"ttt-{ttt}" / "scores.json")
elif command == "ablation":
    touch(opt("--out"))
    dirs = args[args.index("--model-dir") + 1 :]
    dirs = dirs[: next((i for i, a in enumerate(dirs) if a.startswith("--")), len(dirs))]
    for model_dir in dirs:
        run_dir = Path(model_dir).parent
        touch(Path(opt("--json-dir")) / f"{run_dir.parent.name}-{run_dir.name}.json")
elif command == "report":
    for i, arg in enumerate(args):
        if arg == "--out":
            touch(args[i + 1])
'''


def copy_workflow(dest: Path) -> Path:
    """Snakefile, workflow/ and config/ of the repository under `dest` (returned)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(ROOT / folder, dest / folder)
    return dest


def fake_refine_env(bin_dir: Path) -> dict:
    """An environment whose PATH finds the stand-in `refine` first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "refine"
    script.write_text(FAKE_REFINE.replace("{python}", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def snakemake(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300, profile: bool = False):
    """`snakemake <args>` in `cwd`; without `profile`, `--workflow-profile none` comes first."""
    command = [sys.executable, "-m", "snakemake", *([] if profile else ["--workflow-profile", "none"]), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
