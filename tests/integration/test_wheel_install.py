"""The wheel is the whole product: installed (not editable) in a fresh virtualenv outside the
checkout, as the images install it, the domain demo runs, a training dry run validates its
shipped preset and builds the dataset, and the service finds its release adapters and its
migrations.

The virtualenv has no system site-packages; the heavy third-party dependencies (torch,
transformers, vLLM, ...) come from this interpreter's site-packages through a ``.pth`` line
placed after the venv's own site-packages, so the product's packages can only be imported
from the installed wheel (each check asserts where they came from).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("forecast", "service", "training", "clients")
NOT_READ_AT_RUN_TIME = {"README.md"}  # the package folders' notes for readers of the source


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _source_files() -> list[str]:
    """The checkout's files as git sees them (tracked and new, not ignored): a build from a
    copy of them cannot pick up stale ``build/`` output or untracked leftovers."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in _source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(dist), str(src)], cwd=dist, env=dict(os.environ))
    (built,) = dist.glob("dow30_forecaster-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("installed")
    env_dir = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root, env=dict(os.environ))
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)], cwd=root, env=dict(os.environ))
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=root, env=_clean_env()).strip())
    (site / "zz_third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = root / "work"  # the commands' working directory: no checkout under it
    (work / "var" / "models").mkdir(parents=True)
    (work / "var" / "models" / tiny_model.name).symlink_to(tiny_model)  # as materialized
    return {"python": python, "prefix": env_dir, "work": work, "site": site}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"VLLM_TARGET_DEVICE": "cpu", "TOKENIZERS_PARALLELISM": "false", "DS_BUILD_OPS": "0"}


def _installed(venv: dict[str, Path], *args: str, timeout: int = 300) -> str:
    return _run([str(venv["python"]), *args], cwd=venv["work"], env=_clean_env(), timeout=timeout)


def test_the_wheel_ships_every_file_the_packages_hold(wheel: Path) -> None:
    inside = set(zipfile.ZipFile(wheel).namelist())
    files = [f for f in _source_files() if f.split("/")[0] in PACKAGES and "__pycache__" not in f]
    left_out = [f for f in files if f not in inside and Path(f).name not in NOT_READ_AT_RUN_TIME]
    assert left_out == []


def test_products_import_from_the_installed_wheel(venv: dict[str, Path]) -> None:
    probe = "import json, os, forecast, service, training, clients; print(json.dumps({'cwd': os.getcwd(), **{m.__name__: m.__file__ for m in (forecast, service, training, clients)}}))"
    where = json.loads(_installed(venv, "-c", probe))
    assert REPO not in Path(where.pop("cwd")).resolve().parents
    for package, path in where.items():
        assert venv["site"] in Path(path).parents, f"{package} imported from {path}"


def test_domain_demo_runs_from_the_wheel(venv: dict[str, Path]) -> None:
    out = _installed(venv, "-m", "forecast.demo", "--tickers", "AAPL")
    assert "official FinGPT Dow30 test rows" in out
    gpt4 = next(line.split() for line in out.splitlines() if line.strip().startswith("gpt4"))
    assert gpt4[1:3] == ["180", "1.000"]  # the bundled answers and labels, read from the wheel


def test_training_dry_run_reads_the_shipped_preset(venv: dict[str, Path]) -> None:
    out = _installed(venv, "-m", "training", "one", "--base", "llama", "--config", "cpu_tiny", "--dry-run")
    plan = json.loads(out.strip().splitlines()[-1])["llama"]
    preset = json.loads((REPO / "training" / "configs" / "cpu_tiny.json").read_text())
    assert plan["settings"]["data"]["train_rows"] == preset["data"]["train_rows"]
    assert venv["site"] in Path(plan["settings"]["train"]["deepspeed_config"]).parents
    assert len(plan["data"]["train_keys"]) == preset["data"]["train_rows"]
    assert len(plan["data"]["eval_keys"]) == preset["data"]["eval_rows"]
    assert plan["data"]["train_tokens"] > 0


SERVICE_PROBE = """
import json, sys, tempfile
from pathlib import Path
from sqlalchemy import create_engine
import service.app
from forecast.basemodels import BASES, TINY_MODEL_ID
from service import migrations
from service.demo_adapters import RELEASE_ROOT, seed_release_adapters
root = Path(tempfile.mkdtemp())
engine = create_engine(f"sqlite:///{root / 'log.sqlite3'}")
migrations.upgrade(engine)
print(json.dumps({
    "app": service.app.__file__, "release_root": str(RELEASE_ROOT),
    "seeded": seed_release_adapters(root / "adapters", sorted(BASES), TINY_MODEL_ID),
    "migrated": migrations.current(engine) == migrations.head(),
}))
"""


def test_service_finds_its_release_adapters_and_migrations(venv: dict[str, Path]) -> None:
    found = json.loads(_installed(venv, "-c", SERVICE_PROBE).strip().splitlines()[-1])
    assert venv["site"] in Path(found["app"]).parents
    assert venv["site"] in Path(found["release_root"]).parents
    assert found["seeded"] == {"fingpt-deepseek": "v1", "fingpt-llama": "v1"}
    assert found["migrated"]
