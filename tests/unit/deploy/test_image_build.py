"""deploy/image/build.sh (``make image``) and deploy/Dockerfile.cpu agree: every file the
Dockerfile copies from the context exists in the checkout (build.sh's context is the checkout's
files), the base the script imports is the one the Dockerfile names, and the wheels the script
carries are the versions the Dockerfile and the Makefile pin."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "deploy" / "Dockerfile.cpu").read_text()
BUILD = (REPO / "deploy" / "image" / "build.sh").read_text()
COMMON = (REPO / "deploy" / "image" / "common.sh").read_text()


def _arg(name: str) -> str:
    found = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert found, f"Dockerfile.cpu has no default for ARG {name}"
    return found.group(1)


def _var(text: str, name: str) -> str:
    found = re.search(rf"^{name}=(\S+)", text, re.MULTILINE)
    assert found, f"no {name}= in the image scripts"
    return found.group(1)


def test_every_copied_source_is_in_the_context() -> None:
    sources = [
        src
        for line in DOCKERFILE.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
        if not src.startswith("--")
    ]
    assert sources, "Dockerfile.cpu copies nothing from the context"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for src in sources:
        prefix = src.rstrip("/")
        assert any(f == prefix or f.startswith(prefix + "/") for f in tracked), src


def test_the_imported_base_is_the_dockerfiles_from() -> None:
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    named = {f.replace("${PYTHON_VERSION}", _arg("PYTHON_VERSION")) for f in froms}
    assert named == {"python:3.11-slim"}
    assert _var(COMMON, "BASE_IMAGE") == "localhost/python:3.11-slim"


def test_the_carried_wheels_are_the_pinned_versions() -> None:
    assert _var(BUILD, "TORCH_VERSION") == _arg("TORCH_VERSION")
    assert _var(BUILD, "SMOLLM2_VERSION") == _arg("SMOLLM2_VERSION")
    makefile = (REPO / "Makefile").read_text()
    assert f'"torch=={_arg("TORCH_VERSION")}"' in makefile
    assert "deploy/wheels/" in DOCKERFILE and 'cp "$REPO"/deploy/wheels/' in BUILD
