"""Running a copy of a recipe in a test: the copy keeps the test's data and exp in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_recipe(name: str, tmp_path: Path) -> Path:
    """tmp_path/recipes/<name> (scripts and confs, no data/exp/downloads) beside recipes/lib.sh."""
    dst = tmp_path / "recipes" / name
    shutil.copytree(REPO / "recipes" / name, dst, ignore=shutil.ignore_patterns("data", "exp", "downloads", "tune*"))
    shutil.copy(REPO / "recipes" / "lib.sh", dst.parent / "lib.sh")
    return dst


def recipe_env(**env) -> dict[str, str]:
    """This process's environment with .venv/bin first on PATH; keyword arguments set variables
    (None removes one)."""
    environ = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    for k, v in env.items():
        if v is None:
            environ.pop(k, None)
        else:
            environ[k] = str(v)
    return environ


def run_recipe(
    recipe: Path, *args, check: bool = True, timeout: int = 900, script: str = "run.sh", **env
) -> subprocess.CompletedProcess:
    """bash SCRIPT ARGS in recipe_env(**env); check: a non-zero exit raises with the tail of stderr."""
    r = subprocess.run(
        ["bash", str(recipe / script), *args], env=recipe_env(**env), capture_output=True, text=True, timeout=timeout
    )
    if check and r.returncode != 0:
        raise AssertionError(f"{recipe.name}/{script} {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r
