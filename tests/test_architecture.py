"""The layer contracts in pyproject.toml: kept by the code, and really able to fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mandate_wizard", "analytics", "entities", "streams", "kernel")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _project_copy(target: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "templates"))
    return target


def test_the_code_keeps_the_layer_contracts():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_a_transport_module_importing_the_domain_breaks_the_layers(tmp_path):
    copy = _project_copy(tmp_path)
    (copy / "streams" / "upward.py").write_text('"""Breaks the layers on purpose."""\n\nimport analytics.models\n')
    result = _lint_imports(copy)
    assert result.returncode == 1, result.stdout
    assert "streams is not allowed to import analytics" in result.stdout
    assert "streams.upward -> analytics.models" in result.stdout


def test_an_import_inside_a_function_breaks_the_layers_too(tmp_path):
    copy = _project_copy(tmp_path)
    (copy / "kernel" / "upward.py").write_text(
        '"""Breaks the layers on purpose."""\n\n\ndef late():\n'
        "    from entities.models import Entity\n\n"
        "    return Entity\n"
    )
    result = _lint_imports(copy)
    assert result.returncode == 1, result.stdout
    assert "kernel.upward -> entities.models" in result.stdout
