"""Shared fixtures: the tiny model and bundled data, and one real in-process Ray cluster."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "text2sql"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# Ray Train's controller polls its workers every 2 s by default: each run then waits up to 2 s to see them
# finish. Ray Train passes this variable on to its controller from the process that calls fit() (its
# ENV_VARS_TO_PROPAGATE); Tune's trials inherit it from the raylet this process starts. ~1 s a run.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Its spot-preemption watcher is one more actor process a run (a few seconds of start-up on 2 cores) that
# watches for cloud node preemption, which a test machine never has.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

from sqlray.serving.cli import use_haproxy_ingress  # noqa: E402

use_haproxy_ingress()  # what `sqlray serve` starts Ray with: Serve's processes read it when they start


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped cleanly without one)")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from sqlray.training.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny", data=str(DATA))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from sqlray.training.driver import worker_env
    from sqlray.training.config import TrainConfig

    env = worker_env(TrainConfig.model_validate({"model": {"name_or_path": "x"}}))
    # The dashboard serves the State API that Ray Train uses to free the placement groups of trials
    # that Tune stops early (without it, stopped trials leak their workers' CPUs). Loopback only.
    # address="local": a fresh in-process cluster, never one a `ray start` left running on this machine.
    ray.init(address="local", num_cpus=2, runtime_env={"env_vars": env}, include_dashboard=True,
             dashboard_host="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def parrot_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model rigged to prefer, after a newline and forever, the word ``customers`` (never in a test
    DDL), then ``name`` (a column of the tests' players table), then the newline: its layers add nothing
    (o_proj and down_proj zeroed), so with tied embeddings the next token is the one whose embedding best
    matches the current one's. Free decoding writes customers...; under the schema grammar, a SELECT that
    names ``name``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    (foreign,), (allowed,), (newline,) = (tok(t, add_special_tokens=False)["input_ids"]
                                          for t in ("customers", "name", "\n"))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.get_input_embeddings().weight
        emb[foreign], emb[allowed] = 3 * emb[newline], 2 * emb[newline]
    out = tmp_path_factory.mktemp("parrot") / "parrot"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
