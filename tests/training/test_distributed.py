"""Real Ray Train + real DeepSpeed on CPU: 2 workers, gloo, the tiny model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from sqlray.training.config import load_config
from sqlray.training.driver import run_training

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_cluster")


def _overrides(tiny, data_dir, storage, name, *extra):
    return [f"model.name_or_path={tiny}", f"data.source={data_dir}", "data.max_train_rows=160",
            "data.max_length=512", "train.micro_batch_size=4", "train.max_steps=12", "train.epochs=5",
            "train.learning_rate=2e-3", "train.warmup_ratio=0", "train.log_every_steps=1",
            "train.eval_every_steps=4", f"run.storage_path={storage}", f"run.name={name}", *extra]


def _train(tiny, data_dir, storage, name, *extra):
    return run_training(load_config(None, _overrides(tiny, data_dir, storage, name, *extra)))


def _losses(outcome):
    return [h["loss"] for h in outcome.history if "loss" in h]


# 16 sequences a step as 2 workers x 8: the token-weighting test lays the same steps out another way.
ZERO2 = ("deepspeed.stage=2", "train.micro_batch_size=8")


@pytest.fixture(scope="module")
def zero2(tiny_model, data_dir, tmp_path_factory):
    return _train(tiny_model, data_dir, tmp_path_factory.mktemp("runs"), "z2", *ZERO2)


def test_zero2_loss_falls_and_checkpoint_has_a_shard_per_rank(zero2):
    losses = _losses(zero2)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    ckpts = sorted(zero2.run_dir.glob("checkpoint_*"))
    assert ckpts
    shards = sorted(p.name for p in (ckpts[0] / "deepspeed" / "state").glob("*optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]


def test_zero3_trains_and_exports_what_an_unsharded_run_does(zero2, tiny_model, data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    z3 = _train(tiny_model, data_dir, tmp_path, "z3", *ZERO2, "deepspeed.stage=3")
    assert _losses(z3) == pytest.approx(_losses(zero2), rel=2e-3)
    shards = list(next(z3.run_dir.glob("checkpoint_*")).glob("deepspeed/state/zero_pp_rank_*_model_states.pt"))
    assert len(shards) == 2, "ZeRO-3 saves one parameter shard per rank"
    a = AutoModelForCausalLM.from_pretrained(z3.model_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(zero2.model_dir).state_dict()
    assert a.keys() == b.keys()
    for k in a:  # gathered layer by layer onto rank 0, the same weights as ZeRO-2's
        torch.testing.assert_close(a[k], b[k], rtol=2e-3, atol=2e-4, msg=k)


def test_zero3_model_is_built_partitioned(tiny_model):
    """Right after construction, before DeepSpeed's engine exists, no rank holds a full parameter."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def fn(config):
        from sqlray.training.parallelize import init_distributed, partitioned_construction
        from sqlray.training.train import build_training_model

        cfg = load_config(None, [f"model.name_or_path={config['model']}", "deepspeed.stage=3"])
        init_distributed(False)
        keep = partitioned_construction(cfg)  # noqa: F841
        model = build_training_model(cfg)
        params = list(model.parameters())
        # Train v2 keeps reported metrics only with checkpoints; rank 0's return value comes back.
        return {"local": sum(p.numel() for p in params), "full": sum(p.ds_numel for p in params),
                "empty": sum(p.numel() == 0 for p in params), "n": len(params)}

    result = TorchTrainer(fn, train_loop_config={"model": str(tiny_model)},
                          scaling_config=ScalingConfig(num_workers=2, use_gpu=False)).fit()
    m = result.return_value
    assert m["full"] > 900_000 and m["local"] == 0 and m["empty"] == m["n"]


def test_export_reloads_and_generates(zero2, tiny_model, data_dir):
    from transformers import AutoModelForCausalLM

    from sqlray.evaluation.generate import generate_sql, load_for_generation

    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(zero2.model_dir).state_dict()
    assert not torch.equal(base["model.layers.0.mlp.up_proj.weight"], tuned["model.layers.0.mlp.up_proj.weight"])
    model, tok = load_for_generation(str(zero2.model_dir))
    rows = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()[:3]]
    out = generate_sql(model, tok, rows, max_new_tokens=24, batch_size=3)
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert all(isinstance(o["prediction"], str) and "###" not in o["prediction"] for o in out)
    assert (zero2.run_dir / "loss_curve.png").stat().st_size > 1000


LORA = ("model.method=lora", "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0.1",
        "data.max_train_rows=40")  # 5 steps an epoch on 2 workers x 4: 12 steps cross two epoch boundaries


@pytest.fixture(scope="module")
def lora_run(tiny_model, data_dir, tmp_path_factory):
    return _train(tiny_model, data_dir, tmp_path_factory.mktemp("runs"), "lora", *LORA)


def test_lora_trains_only_the_adapter(lora_run, tiny_model):
    from transformers import AutoModelForCausalLM

    out = lora_run
    adapter = load_file(out.adapter_dir / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "lora_B starts at zero and must have moved"
    assert all("lora_" in k for k in adapter)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(out.model_dir).state_dict()
    for k in ("model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(base[k], merged[k]), f"{k} is not adapted and must be unchanged"
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], merged["model.layers.0.self_attn.q_proj.weight"])


def _registered_checkpoints(run_dir: Path) -> int:
    snap = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return len(json.loads(snap.read_text())["checkpoint_results"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_lora_run_resumes_with_identical_losses(lora_run, tiny_model, data_dir, tmp_path):
    """The driver (and its whole Ray cluster) is SIGKILLed after its first checkpoint; the rerun resumes from
    the lean (adapter-only) checkpoint, across epoch boundaries, with LoRA dropout drawing the same masks."""
    args = _overrides(tiny_model, data_dir, tmp_path, "killed", *LORA)
    script = ("import sys; from sqlray.training.config import load_config; from sqlray.training.driver import run_training; "
              "run_training(load_config(None, sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _registered_checkpoints(tmp_path / "killed") < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _registered_checkpoints(tmp_path / "killed") >= 1, "the first run never checkpointed"
    resumed = run_training(load_config(None, args))
    assert resumed.resumes and resumed.resumes[0] >= 4
    assert _losses(resumed) == pytest.approx(_losses(lora_run), rel=1e-5)


def _kill_a_train_worker_after_first_checkpoint(run_dir: Path, killed: list) -> None:
    deadline = time.time() + 240
    while _registered_checkpoints(run_dir) < 1 and time.time() < deadline:
        time.sleep(0.2)
    for p in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in c for c in (p.info["cmdline"] or [])):
            p.kill()
            killed.append(p.pid)
            return


def test_worker_killed_mid_run_recovers(tiny_model, data_dir, tmp_path):
    killed: list[int] = []
    t = threading.Thread(target=_kill_a_train_worker_after_first_checkpoint, args=(tmp_path / "ft", killed))
    t.start()
    out = _train(tiny_model, data_dir, tmp_path, "ft", "run.max_failures=1", "train.max_steps=40")
    t.join()
    assert killed, "no train worker was found to kill"
    assert out.resumes and out.history[-1]["step"] == 40 and out.model_dir.exists()


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_lora_checkpoints_hold_only_trainable_state(lora_run, zero2):
    lora_ckpt = sorted(lora_run.run_dir.glob("checkpoint_*"))[0] / "deepspeed"
    full_ckpt = sorted(zero2.run_dir.glob("checkpoint_*"))[0] / "deepspeed"
    assert _dir_bytes(lora_ckpt) < _dir_bytes(full_ckpt) / 4, (_dir_bytes(lora_ckpt), _dir_bytes(full_ckpt))
    states = torch.load(next(lora_ckpt.rglob("mp_rank_00_model_states.pt")), weights_only=False)["module"]
    # DeepSpeed's exclude_frozen_parameters walks named_parameters(), which lists a tied weight once: the
    # tiny model's lm_head (tied to the embeddings) is the one frozen tensor that stays.
    frozen = [k for k in states if "lora_" not in k]
    assert any("lora_" in k for k in states) and frozen in ([], ["base_model.model.lm_head.weight"]), frozen


@pytest.mark.parametrize("change, field", [("scaling.num_workers=1", "scaling.num_workers"),
                                            ("train.micro_batch_size=2", "train.micro_batch_size"),
                                            ("data.max_train_rows=32", "data (the training rows' content)")])
def test_resume_with_other_settings_is_refused_before_training(lora_run, tiny_model, data_dir, change, field):
    from sqlray.core import ConfigError

    storage = lora_run.run_dir.parent
    with pytest.raises(ConfigError) as e:
        _train(tiny_model, data_dir, storage, "lora", *LORA, change)
    assert field in str(e.value) and "run.name" in str(e.value)


def test_lora_resume_onto_another_base_is_refused(lora_run, tiny_model, data_dir, tmp_path):
    """A lean checkpoint holds the adapter only: resuming it on a retrained base would load silently."""
    import shutil

    from safetensors.torch import load_file, save_file

    from sqlray.core import ConfigError

    other = tmp_path / "retrained"
    shutil.copytree(tiny_model, other)
    w = load_file(other / "model.safetensors")
    save_file({k: v + 0.01 for k, v in w.items()}, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="model.name_or_path"):
        run_training(load_config(None, _overrides(other, data_dir, lora_run.run_dir.parent, "lora", *LORA)))


def test_an_epoch_without_optimizer_steps_is_an_error(tiny_model, data_dir, tmp_path):
    from transformers import AutoTokenizer

    from sqlray.core import ConfigError
    from sqlray.text2sql import load_text2sql
    from sqlray.training.data import tokenize_row

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = list(load_text2sql(str(data_dir))["train"].select(range(40)))
    lengths = sorted(tokenize_row(r, tok, 10**6)["length"] for r in rows)
    # 5 of 40 rows fit: fewer than one step's 2 workers x 4 x 1 sequences
    with pytest.raises(ConfigError, match="zero optimizer steps"):
        _train(tiny_model, data_dir, tmp_path, "zero", "data.max_train_rows=40", f"data.max_length={lengths[4]}")


def test_loss_is_token_weighted_whatever_the_batch_layout(zero2, tiny_model, data_dir, tmp_path):
    """zero2's 16 sequences a step (2 workers x 8) as 1 worker x 4, accumulated 4 times: the same curve. The
    loss is a mean over the step's tokens, however the sequences are split over micro-batches and ranks.
    (Each layout used to be its own run against 1 x 16; one run against zero2 checks both splits at once.)"""
    accum = _losses(_train(tiny_model, data_dir, tmp_path, "w1m4a4", "deepspeed.stage=2", "scaling.num_workers=1",
                           "train.micro_batch_size=4", "train.gradient_accumulation_steps=4",
                           "train.eval_every_steps=100"))
    two = _losses(zero2)
    assert len(accum) == len(two) == 12
    assert max(abs(a - b) / a for a, b in zip(two, accum)) < 0.005, (two, accum)
