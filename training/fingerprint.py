"""What a checkpoint's data position depends on, stored beside it: resuming with another world size,
micro-batch, accumulation, block size, method, seed or dataset would silently put every rank at the wrong
row, so such a resume is refused, naming what changed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlray.core import ConfigError
from sqlray.training.config import TrainConfig

FINGERPRINT_FILE = "fingerprint.json"
# fingerprint key -> the config field a user changes
FIELDS = {"world_size": "scaling.num_workers", "micro_batch_size": "train.micro_batch_size",
          "gradient_accumulation_steps": "train.gradient_accumulation_steps", "max_length": "data.max_length",
          "method": "model.method", "seed": "train.seed", "dataset": "data (the training rows' content)",
          "base": "model.name_or_path (the frozen base a lean LoRA/QLoRA checkpoint does not hold)"}


def dataset_hash(rows) -> str:
    """Content hash of the training rows in order (context, question, answer)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["context"], r["question"], r["answer"]], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def base_identity(name_or_path: str) -> str:
    """A local model folder: a hash of its config.json and of each weight file's name, size and first and
    last MiB (cheap for a 6B model, and changed by retraining); a hub id: the id itself."""
    p = Path(name_or_path)
    if not p.is_dir():
        return name_or_path
    h = hashlib.sha256((p / "config.json").read_bytes() if (p / "config.json").exists() else b"")
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(2**20))
            fh.seek(max(0, size - 2**20))
            h.update(fh.read(2**20))
    return h.hexdigest()[:16]


def run_fingerprint(cfg: TrainConfig, data: str) -> dict:
    fp = {"world_size": cfg.scaling.num_workers, "micro_batch_size": cfg.train.micro_batch_size,
          "gradient_accumulation_steps": cfg.train.gradient_accumulation_steps, "max_length": cfg.data.max_length,
          "method": cfg.model.method, "seed": cfg.train.seed, "dataset": data}
    if cfg.data.bpe_dropout:  # changes the rows' lengths, so which rows fit and the data position
        fp["bpe_dropout"] = cfg.data.bpe_dropout
    if cfg.model.method != "full":  # the checkpoint holds the adapter only: it must go back on the same base
        fp["base"] = base_identity(cfg.model.name_or_path)
    return fp


def check_fingerprint(folder: Path, current: dict, run_dir: Path | None = None) -> None:
    f = Path(folder) / FINGERPRINT_FILE
    where = run_dir or Path(folder).parent
    fresh = f"To start fresh, use another run.name or delete {where}."
    if not f.exists():
        raise ConfigError(f"checkpoint {folder} has no {FINGERPRINT_FILE} (written by an older sqlray): its data "
                          f"position cannot be checked. {fresh}")
    saved = json.loads(f.read_text())
    changed = [f"{FIELDS.get(k, k)}: checkpoint {saved.get(k)!r}, now {v!r}" for k, v in current.items()
               if saved.get(k) != v]
    if changed:
        raise ConfigError(f"cannot resume {where.name} from {Path(folder).name}: " + "; ".join(changed)
                          + f". The data position would be wrong. {fresh}")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint Ray Train resumes from: the one with the most optimizer steps."""
    best, best_step = None, -1
    for d in Path(run_dir).glob("checkpoint_*"):
        try:
            step = json.loads((d / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            continue
        if step > best_step:
            best, best_step = d, step
    return best
