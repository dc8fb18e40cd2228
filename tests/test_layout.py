"""One import name: a user's own `training/` and `evaluation/` packages never shadow sqlray's, and the
packages depend one way (core <- evaluation <- training; serving and cluster on top), without cycles or
private names across package lines."""
import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "serving", "evaluation", "cluster")
# Which sqlray packages each one may import (the shared core, core.py and text2sql.py, is open to all).
ALLOWED = {"evaluation": set(), "cluster": set(), "training": {"evaluation"}, "serving": {"evaluation", "training"}}


def _user_folder(tmp_path: Path) -> Path:
    """A user's repository with its own packages called training and evaluation, which fail loudly."""
    for name in ("training", "evaluation"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s {name} package was imported')\n")
    return tmp_path


def test_cli_and_a_ray_train_run_use_sqlrays_code_from_a_shadowing_folder(tmp_path, tiny_model):
    user = _user_folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(user)}  # as a Ray job's working_dir is
    est = subprocess.run([sys.executable, "-m", "sqlray.cli", "train", "--config", str(REPO / "configs/tiny-cpu.yaml"),
                          f"model.name_or_path={tiny_model}", "--estimate"],
                         cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert est.returncode == 0, est.stderr
    assert "total per GPU" in est.stdout
    run = subprocess.run([sys.executable, "-m", "sqlray.cli", "train", "--config", str(REPO / "configs/tiny-cpu.yaml"),
                          f"model.name_or_path={tiny_model}", f"data.source={REPO / 'data/text2sql-game'}",
                          # what is checked is where a Ray Train worker's code comes from, not the data or scale
                          "data.max_train_rows=64", "scaling.num_workers=1",
                          "train.max_steps=2", "train.eval_every_steps=2", "train.micro_batch_size=4",
                          "run.name=shadow", f"run.storage_path={tmp_path / 'runs'}", "--no-eval"],
                         cwd=user, env={**env, "RAY_ADDRESS": ""}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "the user's" not in run.stderr
    assert (tmp_path / "runs" / "shadow" / "model" / "config.json").exists()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sqlray."):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("sqlray.")]
    return out


def test_packages_depend_one_way_without_private_names():
    bad = []
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).glob("*.py")):
            for module, names in _imports(f):
                target = module.split(".")[1]
                if target in PACKAGES and target != pkg:
                    if target not in ALLOWED[pkg]:
                        bad.append(f"{f.relative_to(REPO)} imports {module} ({pkg} may not depend on {target})")
                    bad += [f"{f.relative_to(REPO)} imports private {module}.{n}" for n in names if n.startswith("_")]
    for f in ("core.py", "text2sql.py"):
        bad += [f"{f} (core) imports {m}" for m, _ in _imports(REPO / f)
                if m.split(".")[1] in PACKAGES]
    assert not bad, "\n".join(bad)


def test_no_generic_top_level_packages_installed():
    import sqlray

    r = subprocess.run([sys.executable, "-c", "import importlib.util as u; print([n for n in "
                        f"{list(PACKAGES)!r} if u.find_spec(n)])"], cwd="/", capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    assert Path(sqlray.__file__).resolve().parent == REPO
