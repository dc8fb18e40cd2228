"""The `sqlray` command. Each package adds its own subcommands: training (data, model, train),
evaluation (eval)."""
from __future__ import annotations

import argparse
import json
import logging
import sys


def _cmd_data(args) -> None:
    if args.action == "generate":
        from training.datagen import write_dataset

        counts = write_dataset(args.out, seed=args.seed)
        print(json.dumps({"out": args.out, "rows": counts}))


def _cmd_model(args) -> None:
    from training.tiny import make_tiny_model

    path = make_tiny_model(args.out, data=args.data, vocab_size=args.vocab_size, hidden=args.hidden, layers=args.layers)
    print(path)


def _cmd_train(args) -> None:
    from training.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.estimate:
        from training.estimate import estimate_memory, format_estimate

        print(format_estimate(estimate_memory(cfg), cfg))
        return
    if args.no_eval:
        cfg.eval.enabled = False
    from training.workflow import train_and_evaluate

    train_and_evaluate(cfg)


def add_commands(sub) -> None:
    d = sub.add_parser("data", help="bundled dataset")
    d.add_argument("action", choices=["generate"])
    d.add_argument("--out", default="data/text2sql")
    d.add_argument("--seed", type=int, default=42)
    d.set_defaults(fn=_cmd_data)

    m = sub.add_parser("model", help="embedded models")
    m.add_argument("kind", choices=["tiny"])
    m.add_argument("--out", required=True)
    m.add_argument("--data", default="data/text2sql", help="dataset whose training split trains the tokenizer")
    m.add_argument("--vocab-size", type=int, default=2048)
    m.add_argument("--hidden", type=int, default=128)
    m.add_argument("--layers", type=int, default=4)
    m.set_defaults(fn=_cmd_model)

    t = sub.add_parser("train", help="fine-tune with Ray Train + DeepSpeed (rerun the same run.name to resume)")
    t.add_argument("--config", required=True, help="YAML run config")
    t.add_argument("--estimate", action="store_true", help="print the per-GPU memory estimate and exit")
    t.add_argument("--no-eval", action="store_true", help="skip before/after scoring")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=100")
    t.set_defaults(fn=_cmd_train)



def build_parser() -> argparse.ArgumentParser:
    from evaluation.cli import add_commands as add_eval

    p = argparse.ArgumentParser(prog="sqlray", description="Fine-tune, tune, serve and evaluate Text2SQL models on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    add_commands(sub)
    add_eval(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from evaluation.scoring import ScoreError
    from training.config import ConfigError
    from training.data import DataError

    try:
        args.fn(args)
    except (ConfigError, DataError, ScoreError) as e:
        print(f"sqlray: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
