"""`refine`: the command line of every pipeline stage (Snakemake calls exactly these).

    refine data      --config C --out DIR                 tokenizer + token datasets
    refine tracking  --config C [--marker F]              MLflow database and experiments, up front
    refine train     --config C --stage S --model M --out DIR [--method X] [--seed N] [--init DIR]
    refine eval ntp  --config C --model-dir DIR --data F.npy --out F.json
    refine report ntp --config C --table F.csv --figure F.png EVAL.json...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from refine.config import ConfigError, load_config

log = logging.getLogger("refine")


def _cmd_data(args, cfg):
    from refine.data.build import build_data

    summary = build_data(cfg, args.out)
    print(json.dumps(summary, indent=2))


def _cmd_tracking(args, cfg):
    from refine.tracking import ensure_experiments, tracking_uri_for

    results = Path(cfg["results_dir"])
    stages = ("pretrain", "midtrain", "posttrain", "eval")
    ensure_experiments(tracking_uri_for(results), [f"{cfg['study']}/{s}" for s in stages], results / "mlartifacts")
    if args.marker:
        Path(args.marker).write_text(tracking_uri_for(results) + "\n")


def _cmd_train(args, cfg):
    from refine.train.run import run_stage

    final = run_stage(cfg, args.stage, args.model, args.out, args.method, args.seed, args.init)
    print(json.dumps(final, indent=2, default=str))


def _cmd_eval(args, cfg):
    from refine.eval.ntp import run_ntp_eval

    if args.suite != "ntp":
        raise SystemExit(f"refine eval: unknown suite {args.suite!r}")
    scores = run_ntp_eval(cfg, args.model_dir, args.data, args.out)
    print(json.dumps(scores, indent=2))


def _cmd_report(args, cfg):
    from refine.report.ntp import write_ntp_report

    if args.what != "ntp":
        raise SystemExit(f"refine report: unknown report {args.what!r}")
    write_ntp_report(args.inputs, args.table, args.figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refine", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, fn, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="study config YAML (config/config.yaml)")
        p.set_defaults(fn=fn)
        return p

    p = add("data", _cmd_data, "generate/load data and build the tokenizer")
    p.add_argument("--out", required=True)
    p = add("tracking", _cmd_tracking, "create the MLflow database and experiments")
    p.add_argument("--marker", help="file to write when done (for Snakemake)")
    p = add("train", _cmd_train, "run one training stage")
    p.add_argument("--stage", required=True, choices=["pretrain", "midtrain"])
    p.add_argument("--model", required=True, help="a key of the config's `models`")
    p.add_argument("--method", help="sft | sft_matched | refine (midtrain)")
    p.add_argument("--seed", type=int, help="overrides the stage's train.seed")
    p.add_argument("--init", help="model directory to start from")
    p.add_argument("--out", required=True)
    p = add("eval", _cmd_eval, "evaluate a model")
    p.add_argument("suite", choices=["ntp"])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p = add("report", _cmd_report, "tables and figures")
    p.add_argument("what", choices=["ntp"])
    p.add_argument("--table", required=True)
    p.add_argument("--figure", required=True)
    p.add_argument("inputs", nargs="+")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        cfg = load_config(args.config)
        args.fn(args, cfg)
    except ConfigError as err:
        print(f"refine: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
