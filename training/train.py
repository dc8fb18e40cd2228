"""Fine-tuning on Ray Train + DeepSpeed: ``train_fn_per_worker(config)`` and a short driver.

Each checkpoint holds every rank's DeepSpeed shard (trainable parameters and optimizer state only for
LoRA/QLoRA), the data position, every RNG state and a fingerprint of what fixes the data order, so a
rerun with the same run name (or a worker-group restart after a failure) continues exactly where it
stopped, or is refused when the settings changed.

The loss is token-weighted per optimizer step: each micro-batch's summed token loss is divided by the
count of target tokens over the whole step (all micro-batches, all ranks), so the objective does not
change with gradient accumulation, micro-batch size or worker count.
"""
from __future__ import annotations

import itertools
import json
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sqlray.core import resolve_path
from sqlray.training.config import TrainConfig

STATE_FILE = "trainer_state.json"


def map_paths(cfg: TrainConfig, fn) -> TrainConfig:
    """``cfg`` with ``fn`` applied to the local paths it may hold: the model and the data source."""
    cfg.model.name_or_path = fn(cfg.model.name_or_path)
    cfg.data.source = fn(cfg.data.source)
    return cfg


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    return map_paths(cfg, resolve_path)


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    history: list[dict] = field(default_factory=list)
    resumes: list[int] = field(default_factory=list)  # steps this run was resumed at


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():  # LoRA dropout on GPU draws from this rank's device generator
        s["cuda"] = torch.cuda.get_rng_state()
    return s


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if torch.cuda.is_available():
        if "cuda" not in s:
            raise RuntimeError("checkpoint has no CUDA RNG state (written on CPU): resuming on GPU would replay "
                               "dropout differently; start a new run.name")
        torch.cuda.set_rng_state(s["cuda"])  # this rank's current device, wherever a restart placed it


def _loaders(cfg: TrainConfig, tokenizer, rank: int, world: int):
    from torch.utils.data import DataLoader, DistributedSampler
    from transformers import DataCollatorForSeq2Seq
    from transformers.trainer_pt_utils import DistributedLengthGroupedSampler

    from sqlray.text2sql import get_split, load_text2sql
    from sqlray.training.data import tokenize_split

    from sqlray.training.fingerprint import dataset_hash

    d = cfg.data
    dd = load_text2sql(d.source, d.config_name)
    train = _train_split(cfg, dd)
    data_hash = dataset_hash(train)
    tokenized = tokenize_split(train, tokenizer, d.max_length, "train", d.loss_on_prompt, d.bpe_dropout, cfg.train.seed)
    splits = {"train": tokenized.remove_columns(["length"]),
              "eval": tokenize_split(get_split(dd, d.eval_split, d.source), tokenizer, d.max_length,
                                     "eval").remove_columns(["length"])}
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    splits["eval"] = eval_shard(splits["eval"], rank, world)
    samplers = {"train": DistributedSampler(splits["train"], num_replicas=world, rank=rank, shuffle=True,
                                            seed=cfg.train.seed, drop_last=True), "eval": None}
    if d.group_by_length:  # transformers' own sampler: shuffled, then sorted by length within mega-batches
        # Grouped by the global batch, so every world size and accumulation sees the same steps' rows.
        step_rows = cfg.train.micro_batch_size * world * cfg.train.gradient_accumulation_steps
        samplers["train"] = DistributedLengthGroupedSampler(step_rows, lengths=tokenized["length"],
                                                            num_replicas=world, rank=rank, seed=cfg.train.seed,
                                                            drop_last=True)
    # Each loader has its own generator: creating an iterator draws a seed from it, and from the global
    # RNG without one, which would shift LoRA dropout's masks after a resume (a new iterator mid-epoch).
    return {k: DataLoader(splits[k], batch_size=cfg.train.micro_batch_size, sampler=samplers[k],
                          collate_fn=collate, drop_last=(k == "train"),
                          generator=torch.Generator().manual_seed(cfg.train.seed))
            for k in splits}, samplers["train"], data_hash


def _train_split(cfg: TrainConfig, dd=None):
    """The rows this run trains on (``data.max_train_rows`` applied)."""
    from sqlray.text2sql import get_split, load_text2sql

    d = cfg.data
    train = get_split(dd if dd is not None else load_text2sql(d.source, d.config_name), d.train_split, d.source)
    return train.select(range(min(d.max_train_rows, len(train)))) if d.max_train_rows else train


def eval_shard(ds, rank: int, world: int):
    """This rank's validation rows as DistributedSampler deals them: the same count on every rank (ZeRO-3
    runs each forward on all ranks together), the last round padded with repeated rows, whose labels are
    masked here so that the loss counts every row exactly once."""
    n = len(ds)
    positions = range(rank, -(-n // world) * world, world)
    shard = ds.select([i % n for i in positions])
    if n % world == 0:  # nothing padded (an empty split too)
        return shard
    from sqlray.training.data import derived_fingerprint

    pad = [i >= n for i in positions]
    # In memory (a few hundred rows): no cache file that a change to this lambda could leave stale.
    return shard.map(lambda r, j: {"labels": [-100] * len(r["labels"]) if pad[j] else r["labels"]},
                     with_indices=True, keep_in_memory=True,
                     new_fingerprint=derived_fingerprint(shard, "pad labels", pad))


def _sum_across_ranks(value: float, device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return float(t[0])


def _step_tokens(group: list[dict], device) -> torch.Tensor:
    """Target tokens in one optimizer step, over all its micro-batches and all ranks (labels shift by one)."""
    n = sum(int((b["labels"][:, 1:] != -100).sum()) for b in group)
    return torch.tensor(_sum_across_ranks(n, device), device=device)


def _groups(it, size: int):
    """Micro-batches in optimizer steps: lists of ``size`` (a short tail is dropped, as the epoch's end)."""
    while True:
        group = list(itertools.islice(it, size))
        if len(group) < size:
            return
        yield group


def _mean_across_ranks(total: float, count: float, device) -> float:
    # on the engine's device: NCCL (GPU workers) reduces CUDA tensors only
    t = torch.tensor([total, count], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return float(t[0] / max(t[1], 1))


@torch.no_grad()
def evaluate_loss(engine, loader) -> float:
    """Token-weighted validation loss over every rank's shard."""
    engine.eval()
    total = tokens = 0.0
    for batch in loader:
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        n = float((batch["labels"][:, 1:] != -100).sum())
        loss = engine(**batch).loss  # run even on a padding-only batch: ZeRO-3 ranks forward together
        if n:
            total += float(loss) * n
            tokens += n
    engine.train()
    return _mean_across_ranks(total, tokens, engine.device)


def _save_checkpoint(engine, state: TrainerState, rank: int, folder: Path, fingerprint: dict) -> None:
    from sqlray.training.fingerprint import FINGERPRINT_FILE
    from sqlray.training.parallelize import save_state

    save_state(engine, folder / "deepspeed")
    torch.save(_rng_state(), folder / f"rng_rank{rank}.pt")
    if rank == 0:
        (folder / STATE_FILE).write_text(json.dumps(state.__dict__))
        (folder / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=1))


def _restore(engine, rank: int, fingerprint: dict) -> TrainerState:
    import ray.train

    from sqlray.training.fingerprint import check_fingerprint
    from sqlray.training.parallelize import load_state

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return TrainerState()
    with ckpt.as_directory() as d:
        check_fingerprint(Path(d), fingerprint)  # also checked by the driver before any worker starts
        load_state(engine, Path(d) / "deepspeed")
        rng = Path(d) / f"rng_rank{rank}.pt"
        if not rng.exists():
            raise RuntimeError(f"checkpoint {d} has no RNG state for rank {rank}: it cannot resume exactly")
        _set_rng_state(torch.load(rng, weights_only=False))
        state = TrainerState(**json.loads((Path(d) / STATE_FILE).read_text()))
    state.resumes.append(state.global_step)
    return state


def _report(engine, state: TrainerState, metrics: dict, rank: int, fingerprint: dict, export_fn=None) -> None:
    """Checkpoint through ray.train.report: each rank uploads its own shard, Ray merges them."""
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _save_checkpoint(engine, state, rank, folder, fingerprint)
        if export_fn is not None:
            export_fn(folder)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))


def _progress(rank: int, total: int, initial: int):
    if rank != 0:
        return None
    try:
        from ray.experimental.tqdm_ray import tqdm
    except ImportError:  # pragma: no cover
        from tqdm import tqdm
    bar = tqdm(total=total, desc="train steps")  # ray's tqdm has no `initial`
    bar.update(initial)
    return bar


def build_training_model(cfg: TrainConfig, device_map=None):
    """The model in the dtype the DeepSpeed precision asks for; QLoRA loads its unquantised parts in fp32
    (k-bit preparation upcasts them anyway). benchmarks/gpu_memory.py measures this same call."""
    from sqlray.training.model import build_model

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.deepspeed.precision]
    return build_model(cfg.model, dtype=dtype if cfg.model.method != "qlora" else torch.float32,
                       device_map=device_map, compute_dtype=cfg.compute_dtype)


def train_fn_per_worker(config: dict) -> None:
    import ray.train

    from sqlray.training.fingerprint import run_fingerprint
    from sqlray.training.model import build_tokenizer
    from sqlray.training.parallelize import init_distributed, partitioned_construction, wrap

    cfg = resolve_paths(TrainConfig.model_validate(config))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    init_distributed(cfg.scaling.use_gpu)
    _seed_all(cfg.train.seed)

    tokenizer = build_tokenizer(cfg.model.name_or_path)
    loaders, sampler, data_hash = _loaders(cfg, tokenizer, rank, world)
    fp = run_fingerprint(cfg, data_hash)
    ga = cfg.train.gradient_accumulation_steps
    steps_per_epoch = len(loaders["train"]) // ga
    if steps_per_epoch == 0:  # the driver's preflight says this first; rows may also be dropped for length
        raise RuntimeError(f"zero optimizer steps per epoch: {len(loaders['train'])} micro-batches per rank, "
                           f"train.gradient_accumulation_steps={ga}")
    total = steps_per_epoch * cfg.train.epochs
    total = min(total, cfg.train.max_steps) if cfg.train.max_steps else total
    zero3 = partitioned_construction(cfg)  # while alive, from_pretrained builds under zero.Init
    on_gpu = cfg.scaling.use_gpu and zero3 is None  # zero.Init places ZeRO-3 shards itself
    model = build_training_model(cfg, device_map={"": ctx.get_local_rank()} if on_gpu else None)
    engine = wrap(model, cfg, total)
    # Dropped once the engine exists: rank 0 alone builds the exported model later, and under a live
    # HfDeepSpeedConfig that would be a zero.Init collective the other ranks never join.
    del zero3
    state = _restore(engine, rank, fp)
    bar = _progress(rank, total, state.global_step)
    window: list[float] = []  # step losses since the last log
    while state.global_step < total:
        sampler.set_epoch(state.epoch)
        micro = itertools.islice(iter(loaders["train"]), state.micro_in_epoch, steps_per_epoch * ga)
        for group in _groups(micro, ga):
            window.append(_optimizer_step(engine, group, world))
            state.micro_in_epoch += ga
            state.global_step += 1
            if bar is not None:
                bar.update(1)
            if state.global_step % cfg.train.log_every_steps == 0 or state.global_step == total:
                state.history.append({"step": state.global_step, "loss": sum(window) / len(window),
                                      "lr": engine.get_lr()[0]})
                window = []
            if state.global_step % cfg.train.eval_every_steps == 0 and state.global_step < total:
                _checkpoint_step(engine, state, loaders["eval"], rank, fp)
            if state.global_step >= total:
                break
        else:
            state.epoch, state.micro_in_epoch = state.epoch + 1, 0
    _final_step(engine, state, loaders["eval"], rank, cfg, tokenizer, fp)


def _optimizer_step(engine, group: list[dict], world: int) -> float:
    """One optimizer step over ``group``'s micro-batches; returns the step's token-weighted loss (all ranks).

    The model's loss is the micro-batch's summed token loss over the step's all-rank token count
    (transformers' ``num_items_in_batch``). DeepSpeed averages gradients over ranks, so the loss goes
    to backward times the world size, unscaled by accumulation: the step's gradient is then exactly
    that of sum(token losses) / tokens."""
    n_tokens = _step_tokens(group, engine.device)
    local = 0.0
    for batch in group:
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        loss = engine(**batch, num_items_in_batch=n_tokens).loss
        engine.backward(loss * world, scale_wrt_gas=False)
        engine.step()
        local += loss.item()
    return _sum_across_ranks(local, engine.device)


def _worker_nodes() -> list[str]:
    """The Ray node id of every rank (collective), so a run records where its workers ran."""
    import ray

    mine = ray.get_runtime_context().get_node_id()
    if not torch.distributed.is_initialized():
        return [mine]
    out: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, mine)
    return out


def _record_eval(state: TrainerState, eval_loss: float) -> None:
    if state.history and state.history[-1]["step"] == state.global_step:
        state.history[-1]["eval_loss"] = eval_loss
    else:
        state.history.append({"step": state.global_step, "eval_loss": eval_loss})


def _last_loss(state: TrainerState) -> float | None:
    return next((h["loss"] for h in reversed(state.history) if "loss" in h), None)


def _checkpoint_step(engine, state: TrainerState, eval_loader, rank: int, fp: dict) -> None:
    eval_loss = evaluate_loss(engine, eval_loader)
    _record_eval(state, eval_loss)
    _report(engine, state, {"step": state.global_step, "eval_loss": eval_loss, "loss": _last_loss(state)}, rank, fp)


def _final_step(engine, state: TrainerState, eval_loader, rank: int, cfg: TrainConfig, tokenizer, fp: dict) -> None:
    from sqlray.training.export import RUN_DTYPES, export_model, run_vocab
    from sqlray.training.parallelize import gather_weights

    eval_loss = evaluate_loss(engine, eval_loader)
    _record_eval(state, eval_loss)
    adapter_only = cfg.model.method != "full"
    weights = gather_weights(engine, adapter_only, rank)  # collective under ZeRO-3: every rank calls it
    nodes = _worker_nodes()

    def export(folder: Path) -> None:
        if rank == 0:
            export_model(weights, cfg.model, tokenizer, folder, RUN_DTYPES[cfg.deepspeed.precision],
                         run_vocab(cfg.model.name_or_path, lambda: _train_split(cfg)["context"]))
            (folder / "history.json").write_text(json.dumps({"history": state.history, "resumes": state.resumes,
                                                             "worker_nodes": nodes}))

    _report(engine, state, {"step": state.global_step, "eval_loss": eval_loss, "loss": _last_loss(state), "done": True,
             "completed": True},  # Tune overwrites "done" with its own flag: "completed" survives
            rank, fp, export_fn=export)
