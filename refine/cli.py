"""`refine`: the command line of every pipeline stage (Snakemake calls exactly these).

refine data      --config C --out DIR [--only X]      tokenizer + token datasets (X: tokenizer | a split)
refine tracking  --config C [--marker F]              MLflow database and experiments, up front
refine train     --config C --stage S --model M --out DIR [--method X] [--seed N] [--init DIR]
refine eval-data --config C --out DIR [--only X]      NIAH / QA / LongBench items (after `data`)
refine eval SUITES --config C --model-dir DIR --out-root DIR [--ttt none|sft|refine] [--seed N]
                  SUITES: comma-separated ntp,niah,qa,longbench; writes DIR/<suite>/<model>/<run>/ttt-<mode>/
refine report ntp|curves|refine_curves|differences|niah|qa|longbench --config C --out F ... INPUTS...
refine report bench --out F.png [--out T.md] CSV    the benchmark figure (and table) from `refine bench`'s CSV
refine bench     [--config C] [--quick] [--out F.csv] [--measurements M ...] [--threads N]
                                                      costs vs NTP, TRL, generate() and growing S, c

An error the user can cause (a bad config value, a missing or malformed input file, a
non-finite loss) is reported as one line `refine: <file/key/record>: <what was expected>` with
exit status 2; `-v` adds the traceback. Anything else is a bug and keeps its traceback.

Startup: this module and the parser import no torch, fla, transformers or mlflow; each command
imports what it uses when it runs (`refine --help` takes well under a second).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from refine.bench import add_arguments
from refine.config import ConfigError
from refine.names import STAGES, SUITES

log = logging.getLogger("refine")


def _cmd_data(args, cfg):
    from refine.data.build import build_data

    summary = build_data(cfg, args.out, only=args.only)
    print(json.dumps(summary, indent=2))


def _cmd_tracking(args, cfg):
    from refine.tracking import ensure_experiments, tracking_uri_for

    results = Path(cfg["results_dir"])
    stages = (*STAGES, "eval")
    ensure_experiments(
        tracking_uri_for(results), [f"{cfg['study']}/{s}" for s in stages], results / "mlartifacts"
    )
    if args.marker:
        Path(args.marker).write_text(tracking_uri_for(results) + "\n")


def _cmd_train(args, cfg):
    from refine.config import check_device
    from refine.train.run import run_stage

    check_device(cfg, args.config)
    final = run_stage(cfg, args.stage, args.model, args.out, args.method, args.seed, args.init)
    print(json.dumps(final, indent=2, default=str))


def _cmd_eval_data(args, cfg):
    from refine.eval.data import build_eval_data

    summary = build_eval_data(cfg, Path(cfg["results_dir"]) / "data" / "tokenizer", args.out, only=args.only)
    print(json.dumps(summary, indent=2))


def _cmd_ablation(args, cfg):
    from refine.eval.ablation import write_ablation

    write_ablation(cfg, args.model_dir, args.variants, args.json_dir, args.out)


def _cmd_eval(args, cfg):
    from refine.config import check_device
    from refine.eval.run import run_suites

    check_device(cfg, args.config)
    suites = [x for x in args.suites.split(",") if x]
    scores = {}
    for ttt in args.ttt.split(","):
        scores[ttt] = run_suites(cfg, suites, args.model_dir, args.out_root, ttt=ttt, seed=args.seed)
    print(json.dumps(scores, indent=2))


def _cmd_report(args, cfg):
    if args.what == "bench":
        from refine.bench.figures import write_bench_report

        write_bench_report(args.inputs, args.out)
        return
    from refine.report.cli import write_report

    write_report(cfg, args.what, args.inputs, args.out)


def _cmd_bench(args, cfg):
    from refine.bench import main as bench_main

    bench_main(args, cfg)


# `refine report` targets (refine.report.cli's reports, the suites of refine.names, the benchmark's)
REPORTS = ("ntp", "curves", "refine_curves", "differences", *SUITES, "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refine", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, fn, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="study config YAML (config/config.yaml)")
        p.set_defaults(fn=fn)
        return p

    p = add("data", _cmd_data, "generate/load data and build the tokenizer")
    p.add_argument("--out", required=True)
    p.add_argument("--only", help="tokenizer | pretrain | midtrain | heldout (default: all)")
    p = add("tracking", _cmd_tracking, "create the MLflow database and experiments")
    p.add_argument("--marker", help="file to write when done (for Snakemake)")
    p = add("train", _cmd_train, "run one training stage")
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--model", required=True, help="a key of the config's `models`")
    p.add_argument(
        "--method", help="midtrain: sft | sft_matched | refine; posttrain: sft | nested_sft | nested_refine"
    )
    p.add_argument("--seed", type=int, help="overrides the stage's train.seed")
    p.add_argument("--init", help="model directory to start from")
    p.add_argument("--out", required=True)
    p = add("eval-data", _cmd_eval_data, "write the NIAH / QA / LongBench items of the study")
    p.add_argument("--out", required=True)
    p.add_argument("--only", help="niah | qa_test | qa_train | longbench (default: all)")
    p = add("eval", _cmd_eval, "evaluate a model on one or more suites")
    p.add_argument("suites", help="comma-separated: ntp,niah,qa,longbench")
    p.add_argument("--model-dir", required=True, help=".../models/<model>/<run>/model")
    p.add_argument("--out-root", required=True, help="results/eval: writes <suite>/<model>/<run>/ttt-<mode>/")
    p.add_argument("--ttt", default="none", help="test-time training, comma-separated: none | sft | refine")
    p.add_argument("--seed", type=int, default=0)
    p = add("ablation", _cmd_ablation, "LaCT base models on NIAH with their fast-weight updates on and off")
    p.add_argument("--model-dir", nargs="+", action="extend", required=True, help="LaCT base model directories")
    p.add_argument("--variants", nargs="+", help="NIAH variants (default: the study's)")
    p.add_argument("--json-dir", type=Path, help="write <model>-<run>.json records here")
    p.add_argument("--out", type=Path, required=True, help="the table (CSV)")
    p = sub.add_parser("report", help="tables and figures from result files")
    p.add_argument("--config", help="study config YAML (config/config.yaml); every report but bench needs it")
    p.set_defaults(fn=_cmd_report)
    p.add_argument("what", choices=REPORTS)
    p.add_argument("--out", required=True, action="append", help="an output table or figure (repeatable)")
    p.add_argument("inputs", nargs="+")
    p = sub.add_parser("bench", help="REFINE's costs side by side: NTP, TRL GRPO, generate(), growing S and c")
    add_arguments(p)
    p.set_defaults(fn=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        if args.command == "report" and args.what != "bench" and not args.config:
            raise ConfigError(f"refine report {args.what}: --config is required")
        cfg = None
        if args.config:
            from refine.study import load_config  # the per-concern configs import torch: only when needed

            cfg = load_config(args.config)
        args.fn(args, cfg)
    except user_errors() as err:
        if args.verbose:
            log.exception("refine %s failed", args.command)
        print(f"refine: {one_line(err)}" + ("" if args.verbose else "  (-v for the traceback)"), file=sys.stderr)
        return 2
    return 0


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors bad input causes: config values, missing/unreadable/malformed files and records
    (every reader raises ValueError naming the file, record and field), a non-finite loss."""
    from refine.train.loop import NonFiniteLossError

    return ConfigError, OSError, ValueError, KeyError, NonFiniteLossError


def one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's message without its quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, UnicodeDecodeError):
        text = f"not UTF-8 text (byte {err.start}: {err.reason})"
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in str(text):
        text = f"{err.filename}: {err.strerror or text}"
    text = " ".join(str(text).split()) or type(err).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


if __name__ == "__main__":
    sys.exit(main())
