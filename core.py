"""The small core every workload shares: the strict config base and its loader, path resolution,
atomic file writes, starting or joining Ray, and a plain text table."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field."""


class StrictModel(BaseModel):
    """Config base: unknown fields are errors, and assignments are validated too."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---- YAML + dotted overrides -------------------------------------------------------------------

def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        node = d.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
        d = node
    d[parts[-1]] = value


def format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"  {loc}: {err['msg']}{got}")
    return "\n".join(lines)


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in overrides or []:
        if "=" not in o:
            raise ConfigError(f"override {o!r}: expected key.sub=value")
        k, v = o.split("=", 1)
        _set_dotted(out, k.strip(), yaml.safe_load(v))
    return out


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _merge(base.get(k, {}) or {}, v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def load_yaml_config(path: str | Path | None, overrides: list[str] | None, cls: type[BaseModel]):
    """Read YAML, apply ``a.b=value`` overrides (values parsed as YAML), validate as ``cls``."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    raw = _merge(raw, parse_overrides(overrides))
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"invalid config {path or '(overrides)'}:\n{format_validation_error(e)}") from None


# ---- paths ---------------------------------------------------------------------------------------

DRIVER_CWD_ENV = "SQLRAY_DRIVER_CWD"


def resolve_path(path: str) -> str:
    """A relative path as the driver meant it: kept if it exists here (a job's working_dir on every
    node), else joined to the driver's folder (local runs, where workers start in Ray's session dir)."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not os.environ.get(DRIVER_CWD_ENV):
        return path
    candidate = Path(os.environ[DRIVER_CWD_ENV]) / p
    return str(candidate) if candidate.exists() else path


def absolute_path(path: str) -> str:
    """An existing local path made absolute (a process that changes folder still finds it); hub ids and
    URIs stay as they are."""
    p = Path(path).expanduser()
    return str(p.resolve()) if not p.is_absolute() and p.exists() else path


def storage_root(storage_path: str) -> str:
    """A storage location for Ray: URIs as given, local folders absolute."""
    return storage_path if "://" in storage_path else str(Path(storage_path).expanduser().resolve())


# ---- atomic writes ---------------------------------------------------------------------------------

def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write through a temporary file in the same folder, fsync, rename: readers and crashes never
    see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False))


# ---- Ray -----------------------------------------------------------------------------------------------

def ensure_ray(env_vars: dict[str, str] | None = None, log_to_driver: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS, or start an in-process one whose workers get ``env_vars``.

    Joining (a job from `sqlray submit`) keeps the job's runtime env as it is: a driver runtime_env would
    replace it, and Ray would delete the job's working_dir (our cwd). Train workers get sqlray's variables
    through RunConfig(worker_runtime_env) instead."""
    import ray

    if ray.is_initialized():
        return
    env = {DRIVER_CWD_ENV: os.environ.get(DRIVER_CWD_ENV) or os.getcwd(), **(env_vars or {})}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=True, logging_level=logging.WARNING)
    else:
        ray.init(address="local", runtime_env={"env_vars": env}, log_to_driver=log_to_driver,
                 configure_logging=True, logging_level=logging.WARNING)


# ---- tables -----------------------------------------------------------------------------------------------

def format_table(headers: list[str], rows: list[list[Any]], floats: str = ".3f") -> str:
    """A fixed-width text table: the first column left-aligned, the rest right-aligned; None is '-'."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return format(v, floats) if isinstance(v, float) else str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [fmt(headers), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    return "\n".join(lines + [fmt(r) for r in body])
