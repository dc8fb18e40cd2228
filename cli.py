"""The `sqlray` command. Each workload registers its own subcommands (``add_commands(sub)`` in its cli
module); only this module knows all four."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from sqlray.cluster.cli import add_commands as add_cluster
from sqlray.evaluation.cli import add_commands as add_eval
from sqlray.serving.cli import add_commands as add_serve
from sqlray.training.cli import add_commands as add_training


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sqlray", description="Fine-tune, tune, serve and evaluate Text2SQL models on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_training, add_eval, add_serve, add_cluster):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from sqlray.core import ConfigError
    from sqlray.evaluation.scoring import ScoreError
    from sqlray.text2sql import DataError

    try:
        args.fn(args)
    except (ConfigError, DataError, ScoreError) as e:
        if os.environ.get("SQLRAY_TRACEBACK"):
            import traceback

            traceback.print_exc()
        print(f"sqlray: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
