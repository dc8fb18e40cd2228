"""Ray Tune over LoRA rank, alpha and learning rate; every trial is a DeepSpeed-ZeRO TorchTrainer.

The Train v2 pattern: a Tune driver function builds the trial's TorchTrainer (training/driver.py's
build_trainer) with TuneReportCallback, so ASHA sees each validation loss the workers report.
With metric val_ex the driver then scores the trial's exported model by execution accuracy on the
validation split; ASHA keeps stopping on validation loss, the searcher and the ranking use EX.
Rerunning with the same name and storage path restores the experiment: finished trials are kept.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from sqlray.core import ConfigError, StrictModel, absolute_path, load_yaml_config
from sqlray.training.config import TrainConfig
from sqlray.training.tune_report import MODES, write_outputs


DRIVER_CPU = 0.01  # a trial's own driver; Ray refuses 0
END_METRICS = ("val_ex", "val_em")  # scored once a trial finishes


class SearchSpace(StrictModel):
    rank: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], description="LoRA ranks to try (choice).")
    alpha_multiple: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0],
                                        description="alpha = multiple x rank (choice).")
    learning_rate: list[float] = Field(default_factory=lambda: [3e-4, 3e-3], min_length=1,
                                       description="[low, high] log-uniform; with searcher=grid, the values to try.")
    dropout: list[float] | None = Field(None, description="LoRA dropout values (choice); None keeps the base config's.")
    target_modules: list[list[str]] | None = Field(
        None, description="Sets of modules LoRA adapts (choice), e.g. [[q_proj, v_proj], [q_proj, k_proj, v_proj, "
                          "o_proj]]; None keeps the base config's.")
    seeds: list[int] | None = Field(
        None, min_length=1, description="train.seed values each configuration runs with (grid searcher only): "
                                        "the results table then gives each configuration's mean and spread over "
                                        "them. None: one run per configuration, with train.seed.")


class SchedulerSettings(StrictModel):
    grace_period: int = Field(1, ge=1, description="ASHA: reports a trial always gets before it can be stopped.")
    reduction_factor: float = Field(2, gt=1, description="ASHA: keep the best 1/reduction_factor at each rung.")


class TuneSettings(StrictModel):
    name: str = Field("tune-lora", pattern=r"^[A-Za-z0-9_.\-]+$", description="Experiment name; rerun to resume.")
    storage_path: str = Field("runs", description="Where the experiment lives.")
    num_samples: int = Field(8, ge=1, description="Trials (with searcher=grid: repeats of the grid).")
    searcher: Literal["optuna", "random", "grid"] = Field("optuna", description="Optuna TPE, random, or a full grid.")
    metric: Literal["eval_loss", "val_ex"] = Field(
        "eval_loss", description="The objective. eval_loss: validation loss (minimised). val_ex: execution accuracy "
                                 "on the validation split, scored when a trial finishes (maximised). ASHA always "
                                 "stops trials on the validation loss reported during training.")
    val_ex_rows: int = Field(100, ge=1, description="metric=val_ex: validation rows each finished trial is scored on.")
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description="ASHA early stopping.")
    max_concurrent_trials: int | None = Field(None, ge=1, description="Default: cluster CPUs (or GPUs) / a trial's needs.")
    search: SearchSpace = Field(default_factory=SearchSpace, description="The search space.")
    pretrain_config: str | None = Field(
        None, description="Training YAML run first (without scoring) when train.model.name_or_path does not exist yet: "
                          "LoRA needs a trained base.")
    train: TrainConfig = Field(description="The base run every trial starts from (method lora or qlora).")


def load_tune_config(path: str | None, overrides: list[str] | None = None) -> TuneSettings:
    cfg = load_yaml_config(path, overrides, TuneSettings)
    if cfg.train.model.method not in ("lora", "qlora"):
        raise ConfigError("train.model.method: tuning searches LoRA rank/alpha, so it must be lora or qlora")
    if cfg.searcher != "grid" and len(cfg.search.learning_rate) != 2:
        raise ConfigError(f"search.learning_rate: expected [low, high] for searcher {cfg.searcher} (log-uniform), "
                          f"got {cfg.search.learning_rate}; list the values to try with searcher: grid")
    if cfg.search.seeds and cfg.searcher != "grid":
        raise ConfigError(f"search.seeds needs searcher: grid (got {cfg.searcher}): a sampling searcher would "
                          "draw a different configuration for each seed, so no configuration would repeat")
    return cfg


def param_space(t: TuneSettings) -> dict[str, Any]:
    from ray import tune

    s = t.search
    if t.searcher == "grid":
        space = {"rank": tune.grid_search(s.rank), "alpha_multiple": tune.grid_search(s.alpha_multiple),
                 "learning_rate": tune.grid_search(s.learning_rate)}
    else:
        space = {"rank": tune.choice(s.rank), "alpha_multiple": tune.choice(s.alpha_multiple),
                 "learning_rate": tune.loguniform(min(s.learning_rate), max(s.learning_rate))}
    for name in ("dropout", "target_modules"):
        values = getattr(s, name)
        if values:
            space[name] = tune.grid_search(values) if t.searcher == "grid" else tune.choice(values)
    if s.seeds:
        space["seed"] = tune.grid_search(s.seeds)
    return space


def trial_config(base: dict, params: dict, trial_name: str, storage: str) -> TrainConfig:
    """The base TrainConfig with one trial's rank/alpha/lr applied; validated like any run config."""
    cfg = TrainConfig.model_validate(base)
    cfg.model.lora.r = int(params["rank"])
    cfg.model.lora.alpha = float(params["alpha_multiple"]) * int(params["rank"])
    cfg.train.learning_rate = float(params["learning_rate"])
    if "dropout" in params:
        cfg.model.lora.dropout = float(params["dropout"])
    if "target_modules" in params:
        cfg.model.lora.target_modules = list(params["target_modules"])
    if "seed" in params:  # model init, data order and dropout all follow it
        cfg.train.seed = int(params["seed"])
    cfg.run.name = trial_name
    cfg.run.storage_path = storage
    cfg.eval.enabled = False
    return cfg


def _report_callback(pending: tuple[str, ...]):
    from ray.tune.integration.ray_train import TuneReportCallback

    class TrialReport(TuneReportCallback):
        """Forwards each Train report to Tune. Metrics scored only at a trial's end read NaN until then: Tune
        checks every result for the searcher's metric. With such metrics the last report is held back: the
        trial reports it itself once scored (at the last step ASHA stops a trial, and done=True ends it)."""

        def after_report(self, run_context, metrics, checkpoint):
            if pending and metrics[0].get("completed"):
                return
            metrics = [{**{k: float("nan") for k in pending}, **metrics[0]}, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)
            # Wait until Tune has taken it, so the trial's own final report can't overtake it. (The queue
            # is the parent's private attribute: if a Ray release renames it, the scoring's seconds remain.)
            queue = getattr(self, "_training_actor_item_queue", None)
            deadline = time.monotonic() + 120
            while pending and queue is not None and not queue.empty() and time.monotonic() < deadline:
                time.sleep(0.05)

    return TrialReport()


def score_checkpoint(checkpoint, cfg_json: dict, max_rows: int) -> dict:
    """EM/EX of a trial's adapter on the shared base (no merged copy per trial), on the validation split;
    runs as a Ray task."""
    import torch

    from sqlray.evaluation.generate import generate_sql, load_for_generation
    from sqlray.evaluation.scoring import join_predictions, score_row, summarize
    from sqlray.text2sql import get_split, load_text2sql
    from sqlray.core import resolve_path

    cfg = TrainConfig.model_validate(cfg_json)
    split = get_split(load_text2sql(resolve_path(cfg.data.source), cfg.data.config_name), cfg.data.eval_split,
                      cfg.data.source)
    rows = [{**r, "id": i} for i, r in enumerate(split.select(range(min(max_rows, len(split)))))]
    from sqlray.evaluation.rename import load_vocab

    with checkpoint.as_directory() as d:
        adapter = Path(d) / "adapter"
        # the schema names the trial's training taught, written beside its weights (evaluation.rename)
        vocab = load_vocab(adapter if adapter.exists() else Path(d) / "hf_model") if cfg.eval.rename_names else None
        if adapter.exists():
            model, tok = load_for_generation(resolve_path(cfg.model.name_or_path), adapter=str(adapter))
        else:
            model, tok = load_for_generation(str(Path(d) / "hf_model"))
    if torch.cuda.is_available():
        model.cuda()
    preds = generate_sql(model, tok, rows, cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.eval.constrain_sql, vocab)
    s = summarize([score_row(r) for r in join_predictions(rows, preds)])["all"]
    return {"val_ex": s["ex"] or 0.0, "val_em": s["em"], "val_rows": s["n"]}  # Tune compares numbers


def tune_trial(params: dict) -> None:
    """One trial: build and fit a TorchTrainer whose reports reach Tune; with val_ex, score its model after."""
    import ray
    from ray import tune

    from sqlray.training.driver import build_trainer, worker_env

    ctx = tune.get_context()
    cfg = trial_config(params["base"], params, f"train-{ctx.get_trial_id()}", params["trial_storage"])
    pending = END_METRICS if params.get("objective") == "val_ex" else ()
    result = build_trainer(cfg, callbacks=[_report_callback(pending)]).fit()
    if result.error:
        raise result.error
    if pending:
        # The workers are gone: their resources score the model (a GPU if they trained on GPUs). "DEFAULT"
        # keeps the task out of the trial's own placement group, which only holds the driver's 0.01 CPU.
        task = ray.remote(score_checkpoint).options(
            num_cpus=cfg.scaling.cpus_per_worker, num_gpus=1 if cfg.scaling.use_gpu else 0, max_retries=0,
            scheduling_strategy="DEFAULT", runtime_env={"env_vars": worker_env(cfg)})
        scores = ray.get(task.remote(result.checkpoint, cfg.model_dump(mode="json"), params["val_ex_rows"]))
        last = {k: result.metrics[k] for k in ("step", "eval_loss", "loss", "completed") if k in result.metrics}
        tune.report({**last, **scores, "checkpoint_path": result.checkpoint.path})


def _tuner(t: TuneSettings, exp_dir: Path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from sqlray.training.train import map_paths

    trainable = tune.with_resources(tune_trial, {"CPU": DRIVER_CPU})  # the driver only waits; workers hold the resources
    if tune.Tuner.can_restore(str(exp_dir)):
        return tune.Tuner.restore(str(exp_dir), trainable, resume_errored=False, restart_errored=False)
    search_alg = None
    if t.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=t.metric, mode=MODES[t.metric], seed=t.train.train.seed)
    # ASHA judges the loss reported during training; the objective may only exist once a trial ends.
    asha = ASHAScheduler(time_attr="training_iteration", metric="eval_loss", mode="min",
                         grace_period=t.scheduler.grace_period,
                         reduction_factor=t.scheduler.reduction_factor,
                         max_t=max(1, _reports_per_trial(t.train)))
    base = map_paths(t.train.model_copy(deep=True), absolute_path).model_dump(mode="json")
    space = {**param_space(t), "base": base, "trial_storage": str(exp_dir / "trials"), "objective": t.metric,
             "val_ex_rows": t.val_ex_rows}
    return tune.Tuner(trainable, param_space=space,
                      tune_config=tune.TuneConfig(scheduler=asha, search_alg=search_alg,
                                                  num_samples=t.num_samples,
                                                  max_concurrent_trials=_max_concurrent(t),
                                                  trial_dirname_creator=_trial_dirname),
                      run_config=tune.RunConfig(name=t.name, storage_path=str(exp_dir.parent)))


def _trial_dirname(trial) -> str:
    """Short folder names: Tune's default spells out every parameter, the whole base config included."""
    return f"trial_{trial.trial_id}"


def _reports_per_trial(c: TrainConfig) -> int:
    return math.ceil((c.train.max_steps or 10**6) / c.train.eval_every_steps)


def _trial_cpus(sc) -> float:
    """What one trial holds: its workers plus its driver."""
    return sc.num_workers * sc.cpus_per_worker + DRIVER_CPU


def check_fits(t: TuneSettings, resources: dict) -> None:
    """A trial that can never be placed would wait forever: refuse it up front."""
    from sqlray.training.config import ConfigError

    sc = t.train.scaling
    need = _trial_cpus(sc)
    if need > resources.get("CPU", 0) + 1e-9:
        raise ConfigError(
            f"train.scaling: a trial needs {sc.num_workers} workers x {sc.cpus_per_worker} CPU + {DRIVER_CPU} for its "
            f"driver = {need:g} CPUs, but the cluster has {resources.get('CPU', 0):g}; lower "
            f"train.scaling.cpus_per_worker (e.g. 0.9) or num_workers")
    if sc.use_gpu and sc.num_workers > resources.get("GPU", 0):
        raise ConfigError(f"train.scaling: a trial needs {sc.num_workers} GPUs; the cluster has {resources.get('GPU', 0):g}")


def _max_concurrent(t: TuneSettings) -> int:
    import ray

    if t.max_concurrent_trials:
        return t.max_concurrent_trials
    sc = t.train.scaling
    res = ray.cluster_resources()
    if sc.use_gpu:
        return max(1, int(res.get("GPU", 0)) // sc.num_workers)
    return max(1, int(res.get("CPU", 1) // _trial_cpus(sc)))


def run_tune(t: TuneSettings) -> Path:
    from sqlray.core import storage_root
    from sqlray.training.driver import ensure_train_ray, preflight

    if t.pretrain_config and not Path(t.train.model.name_or_path).exists():
        from sqlray.training.config import load_config
        from sqlray.training.driver import run_training

        print(f"[sqlray] {t.train.model.name_or_path} missing: training the base with {t.pretrain_config}", flush=True)
        run_training(load_config(t.pretrain_config))
    preflight(t.train)
    ensure_train_ray(t.train)
    import ray

    check_fits(t, ray.cluster_resources())
    exp_dir = Path(storage_root(t.storage_path)) / t.name
    results = _tuner(t, exp_dir).fit()
    best = write_outputs(t, results, exp_dir)
    if best is not None:
        (exp_dir / "best_config.yaml").write_text(best_trial_yaml(t, best.config))
        ckpt = (best.metrics or {}).get("checkpoint_path")  # TuneReportCallback passes the Train checkpoint here
        adapter = export_best_adapter(ckpt, exp_dir)
        print(f"[sqlray] best trial: rank {best.config['rank']}, alpha {best.config['alpha_multiple'] * best.config['rank']:g}, "
              f"lr {best.config['learning_rate']:.2e} -> {exp_dir / 'best_config.yaml'}"
              + (f"; adapter {adapter}" if adapter else ""))
    print(f"[sqlray] tune folder: {exp_dir}")
    return exp_dir


def best_trial_yaml(t: TuneSettings, params: dict) -> str:
    cfg = trial_config(t.train.model_dump(mode="json"), params, f"{t.name}-best", t.train.run.storage_path)
    cfg.eval.enabled = t.train.eval.enabled
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def export_best_adapter(checkpoint_path: str | None, out: Path) -> Path | None:
    if not checkpoint_path or not (Path(checkpoint_path) / "adapter").exists():
        return None
    target = out / "best_adapter"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(checkpoint_path) / "adapter", target)
    return target
