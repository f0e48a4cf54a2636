"""`python -m refine.rehearsal OUT_DIR`: write the rehearsal's tokenizer, checkpoints and data (see the package doc)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import fields

from refine.rehearsal import RehearsalSizes, build_assets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m refine.rehearsal",
        description="Write the local stand-ins for every hub download of config/paper.yaml (Llama-2-format "
        "tokenizer, fla-hub DeltaNet and official LaCT checkpoints at tiny size, SlimPajama JSONL, LongBench "
        "raw JSONL, RULER-QA parquet) into OUT_DIR; existing assets with the same settings are kept.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the assets into")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generator and weight init (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild every asset, even those that exist")
    for f in fields(RehearsalSizes):
        if f.type in ("int", "float"):
            kind = int if f.type == "int" else float
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default,
                                help=f"(default {f.default})")  # fmt: skip
    parser.add_argument("--qa-lengths", type=int, nargs="+", default=list(RehearsalSizes.qa_lengths),
                        help=f"RULER-QA prompt lengths (default {' '.join(map(str, RehearsalSizes.qa_lengths))})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    values = {f.name: getattr(args, f.name) for f in fields(RehearsalSizes)}
    start = time.perf_counter()
    manifest = build_assets(args.out_dir, seed=args.seed, sizes=RehearsalSizes(**values), force=args.force)
    logging.getLogger("refine.rehearsal").info("assets ready in %.1f s; config values:\n%s",
                                               time.perf_counter() - start, json.dumps(manifest["config"], indent=2))


if __name__ == "__main__":
    main()
