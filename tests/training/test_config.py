from pathlib import Path

import pytest

from sqlray.training.config import ConfigError, TrainConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"tiny-cpu.yaml", "tiny-cpu-lora.yaml", "yi-ko-6b-qlora.yaml", "open-solar-ko-10.7b-qlora.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    import yaml

    from sqlray.training.tune import TuneSettings, load_tune_config

    raw = yaml.safe_load(path.read_text())
    if path.name.startswith("serve-"):
        from ray.serve.schema import ServeDeploySchema

        from sqlray.serving.config import ServeSettings

        if "applications" in raw:  # a Serve config file: Ray's own schema, then our args
            schema = ServeDeploySchema.model_validate(raw)
            assert schema.applications[0].import_path == "sqlray.serving.app:build_app"
            raw = schema.applications[0].args
        assert ServeSettings.model_validate(raw).max_batch_size >= 1
    elif "search" in raw:
        cfg = load_tune_config(str(path))
        assert isinstance(cfg, TuneSettings) and cfg.train.model.method in ("lora", "qlora")
    else:
        cfg = load_config(path)
        assert isinstance(cfg, TrainConfig)
        assert cfg.run.name


def test_reference_hyperparameters():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "yi-ko-6b-qlora.yaml")
    assert cfg.model.name_or_path == "beomi/Yi-Ko-6B" and cfg.model.method == "qlora"
    t = cfg.train
    assert (t.learning_rate, t.micro_batch_size, t.gradient_accumulation_steps, t.epochs) == (2e-4, 8, 8, 1)
    assert (t.warmup_ratio, t.weight_decay, cfg.data.max_length) == (0.1, 0.01, 1024)
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout) == (16, 32, 0.05)
    assert cfg.model.quantization.quant_type == "nf4"


def test_overrides_are_typed():
    cfg = load_config(None, ["model.name_or_path=m", "train.learning_rate=1e-3", "deepspeed.stage=3",
                             "model.lora.target_modules=[q_proj,v_proj]"])
    assert cfg.train.learning_rate == 1e-3 and cfg.deepspeed.stage == 3
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("overrides,needle", [
    (["model.method=qlora", "scaling.use_gpu=true", "deepspeed.stage=3", "scaling.num_workers=4"], "stage=3"),
    (["model.method=qlora"], "use_gpu"),
    (["deepspeed.precision=bf16"], "precision"),
    (["deepspeed.offload_param=cpu", "deepspeed.stage=2"], "offload_param"),
    (["train.learning_rate=-1"], "train.learning_rate"),
    (["train.lerning_rate=1"], "train.lerning_rate"),
    (["deepspeed.stage=5"], "deepspeed.stage"),
    (["run.name=bad name"], "run.name"),
    (["model.method=qlora", "scaling.use_gpu=true", "deepspeed.precision=bf16",
      "model.quantization.compute_dtype=float16"], "model.quantization.compute_dtype=float16 contradicts"),
])
def test_bad_configs_name_the_field(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.name_or_path=m", *overrides])
    assert needle in str(e.value)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["model.name_or_path"])


def test_global_batch_larger_than_data_fails_before_workers(tmp_path, data_dir):
    from sqlray.training.driver import preflight

    cfg = load_config(None, ["model.name_or_path=m", f"data.source={data_dir}", "data.max_train_rows=10",
                             "train.micro_batch_size=8", "scaling.num_workers=2"])
    with pytest.raises(ConfigError, match="only 10 rows"):
        preflight(cfg)


def test_tune_trial_that_cannot_fit_the_cluster_is_refused():
    from sqlray.training.tune import check_fits, load_tune_config

    cfg = load_tune_config(Path(__file__).resolve().parents[2] / "configs" / "tune-lora-tiny.yaml")
    check_fits(cfg, {"CPU": 2.0})  # 2 x 0.9 + 0.01 fits two cores
    cfg.train.scaling.cpus_per_worker = 1
    with pytest.raises(ConfigError, match="cpus_per_worker"):
        check_fits(cfg, {"CPU": 2.0})


def test_serve_settings_reject_incompatible_values():
    from pydantic import ValidationError

    from sqlray.serving.config import ServeSettings

    with pytest.raises(ValidationError, match="max_batch_size"):
        ServeSettings(max_batch_size=32, max_ongoing_requests=8)
    with pytest.raises(ValidationError, match="adapter"):
        ServeSettings(adapters={"a/b": "x"})
    with pytest.raises(ValidationError, match="extra"):
        ServeSettings(batch_size=3)


def test_tune_searches_dropout_and_target_modules_too():
    from sqlray.training.tune import load_tune_config, param_space, trial_config

    t = load_tune_config(None, ["train.model.name_or_path=x", "train.model.method=lora", "searcher=grid",
                                "search.dropout=[0.0, 0.1]", "search.target_modules=[[q_proj, v_proj], [o_proj]]"])
    space = param_space(t)
    assert space["target_modules"] == {"grid_search": [["q_proj", "v_proj"], ["o_proj"]]}
    assert space["dropout"] == {"grid_search": [0.0, 0.1]}
    cfg = trial_config(t.train.model_dump(mode="json"), {"rank": 4, "alpha_multiple": 2, "learning_rate": 1e-3,
                                                         "dropout": 0.1, "target_modules": ["o_proj"]}, "t", "runs")
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout) == (4, 8.0, 0.1)
    assert cfg.model.lora.target_modules == ["o_proj"] and cfg.train.learning_rate == 1e-3


def test_tune_seeds_need_the_grid_searcher_and_set_the_trials_seed():
    from sqlray.core import ConfigError
    from sqlray.training.tune import load_tune_config, param_space, trial_config

    base = ["train.model.name_or_path=x", "train.model.method=lora", "search.seeds=[1, 2]"]
    with pytest.raises(ConfigError, match="search.seeds needs searcher: grid"):
        load_tune_config(None, base)
    t = load_tune_config(None, [*base, "searcher=grid"])
    assert param_space(t)["seed"] == {"grid_search": [1, 2]}
    cfg = trial_config(t.train.model_dump(mode="json"), {"rank": 4, "alpha_multiple": 2, "learning_rate": 1e-3,
                                                         "seed": 2}, "t", "runs")
    assert cfg.train.seed == 2


def test_qlora_compute_dtype_follows_precision_unless_set():
    base = ["model.name_or_path=m", "model.method=qlora", "scaling.use_gpu=true"]
    assert load_config(None, [*base, "deepspeed.precision=bf16"]).compute_dtype == "bfloat16"
    assert load_config(None, [*base, "deepspeed.precision=fp16"]).compute_dtype == "float16"
    assert load_config(None, [*base, "deepspeed.precision=fp16",
                              "model.quantization.compute_dtype=float16"]).compute_dtype == "float16"
