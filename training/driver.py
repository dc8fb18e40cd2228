"""The driver: check the config against the data before any worker starts, run the TorchTrainer,
and lay out the run folder (model in HF format, adapter, loss history and curve)."""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlray.core import ConfigError, ensure_ray, storage_root
from sqlray.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    run_dir: Path
    model_dir: Path
    adapter_dir: Path | None
    history: list[dict]
    metrics: dict
    resumes: list[int]


def run_dir(cfg: TrainConfig) -> Path:
    return Path(storage_root(cfg.run.storage_path)) / cfg.run.name


def worker_env(cfg: TrainConfig) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1",
           # Workers start elsewhere; relative data/model paths resolve against the driver's folder.
           # (a Tune trial runs in its own folder: it passes on the driver's, not its own)
           "SQLRAY_DRIVER_CWD": os.environ.get("SQLRAY_DRIVER_CWD") or os.getcwd(),
           # DeepSpeed JIT-builds its ops once; a shared cache keeps later runs from rebuilding them.
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                  str(Path("~/.cache/sqlray/torch_extensions").expanduser()))}
    # Explicit both ways: a worker's env vars merge over the cluster's, which may say "cpu".
    env["DS_ACCELERATOR"] = "cuda" if cfg.scaling.use_gpu else "cpu"
    return env


def preflight(cfg: TrainConfig) -> None:
    """Failures that need the data or the model folder, raised before Ray starts any worker."""
    from sqlray.text2sql import get_split, load_text2sql

    if cfg.model.create_tiny_if_missing:
        from sqlray.training.tiny import ensure_tiny_model

        ensure_tiny_model(cfg.model.name_or_path, cfg.data.source)
    dd = load_text2sql(cfg.data.source, cfg.data.config_name)
    train = get_split(dd, cfg.data.train_split, cfg.data.source)
    get_split(dd, cfg.data.eval_split, cfg.data.source)
    if cfg.data.max_train_rows:
        train = train.select(range(min(len(train), cfg.data.max_train_rows)))
    n = len(train)
    gb = cfg.global_batch_size
    if gb > n:
        raise ConfigError(
            f"train.micro_batch_size ({cfg.train.micro_batch_size}) x train.gradient_accumulation_steps "
            f"({cfg.train.gradient_accumulation_steps}) x scaling.num_workers ({cfg.scaling.num_workers}) = {gb} "
            f"sequences per step, but the training split has only {n} rows: lower one of them.")
    _check_steps(cfg, train)
    _check_resume(cfg, train)


def _check_steps(cfg: TrainConfig, train) -> None:
    """Rows longer than data.max_length are dropped in the workers: count what fits, so an epoch with zero
    optimizer steps is an error now rather than an untrained model exported as a success."""
    from sqlray.training.data import tokenize_split
    from sqlray.training.model import build_tokenizer

    if not Path(cfg.model.name_or_path).exists():
        return  # a hub model: its tokenizer is fetched by the workers; they check the same thing
    fit = len(tokenize_split(train, build_tokenizer(cfg.model.name_or_path), cfg.data.max_length, "train (preflight)"))
    if fit // cfg.global_batch_size == 0:
        raise ConfigError(f"zero optimizer steps per epoch: {fit} training rows fit data.max_length="
                          f"{cfg.data.max_length}, fewer than one step's {cfg.global_batch_size} sequences "
                          f"(train.micro_batch_size x train.gradient_accumulation_steps x scaling.num_workers); "
                          f"raise data.max_length or lower the batch.")


def _check_resume(cfg: TrainConfig, train) -> None:
    """A rerun of an existing run.name resumes from its latest checkpoint: refuse it now when what fixes
    the data position changed (the workers check again)."""
    from sqlray.training.fingerprint import check_fingerprint, dataset_hash, latest_checkpoint, run_fingerprint

    if "://" in cfg.run.storage_path:
        return  # cloud storage: checked by the workers when they restore
    ckpt = latest_checkpoint(run_dir(cfg))
    if ckpt is not None:
        check_fingerprint(ckpt, run_fingerprint(cfg, dataset_hash(train)), run_dir(cfg))


def replace_dir(target: Path, make) -> None:
    """Build a folder beside ``target`` and swap it in by renames: a crash leaves the old one (possibly as
    ``.NAME.old``) or the new one, never neither half-written."""
    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    make(tmp)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def ensure_train_ray(cfg: TrainConfig) -> None:
    """Join RAY_ADDRESS's cluster or start a local one whose workers carry sqlray's variables."""
    ensure_ray(worker_env(cfg), log_to_driver=True)


def build_trainer(cfg: TrainConfig, callbacks: list | None = None):
    """The TorchTrainer for ``cfg``; Tune's driver builds trials with this too."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from sqlray.training.train import train_fn_per_worker

    resources = {"CPU": cfg.scaling.cpus_per_worker}
    scaling = ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                            resources_per_worker=resources, placement_strategy=cfg.scaling.placement_strategy)
    run = RunConfig(name=cfg.run.name, storage_path=storage_root(cfg.run.storage_path),
                    failure_config=FailureConfig(max_failures=cfg.run.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
                    worker_runtime_env={"env_vars": worker_env(cfg)}, callbacks=callbacks)
    return TorchTrainer(train_fn_per_worker, train_loop_config=cfg.model_dump(mode="json"),
                        scaling_config=scaling, run_config=run)


def run_training(cfg: TrainConfig, checked: bool = False) -> TrainOutcome:
    """Train (resuming if this run name has a checkpoint), then copy the exported model into the run folder.
    ``checked``: the caller already ran preflight on this config."""
    from sqlray.training.plots import plot_loss

    if not checked:
        preflight(cfg)
    ensure_train_ray(cfg)
    result = build_trainer(cfg).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"run {cfg.run.name} finished without a checkpoint: {result.error}")
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as d:
        for name in ("hf_model", "adapter"):
            if (Path(d) / name).exists():
                replace_dir(out / ("model" if name == "hf_model" else name), lambda tmp: shutil.copytree(Path(d) / name, tmp))
        saved = json.loads((Path(d) / "history.json").read_text())
    if cfg.model.method != "full":  # one merged model per run, in the run's dtype
        from sqlray.training.export import RUN_DTYPES, merge_into

        replace_dir(out / "model", lambda tmp: merge_into(out / "adapter", cfg.model, tmp,
                                                           RUN_DTYPES[cfg.deepspeed.precision]))
    history = saved["history"]
    (out / "history.json").write_text(json.dumps(saved, indent=1))
    plot_loss(history, out / "loss_curve.png", title=cfg.run.name)
    adapter = out / "adapter"
    return TrainOutcome(out, out / "model", adapter if adapter.exists() else None, history,
                       dict(result.metrics), saved["resumes"])
