"""The structure the project promises (docs/architecture.md): short README, short functions, a
lean config, benchmarks outside the product, comments that cite only what is in the repository.

The import directions themselves are import-linter contracts (``[tool.importlinter]`` in
pyproject.toml), checked by ``lint-imports`` in the test command.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from recloop.config import Config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("recloop", "tasks", "flows", "models")
MAX_FUNCTION_LINES = 100
MAX_CONFIG_FIELDS = 45
MAX_README_LINES = 250


def _product_files() -> Iterator[Path]:
    for package in PRODUCT:
        yield from sorted((REPO / package).rglob("*.py"))


def _functions(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.end_lineno - node.lineno + 1


def _leaf_fields(cls: type) -> list[str]:
    out: list[str] = []
    for field in dataclasses.fields(cls):
        inner = field.type if isinstance(field.type, type) else None
        default = field.default_factory() if callable(field.default_factory) else field.default
        if dataclasses.is_dataclass(default) or (inner and dataclasses.is_dataclass(inner)):
            out += [f"{field.name}.{leaf}" for leaf in _leaf_fields(type(default))]
        else:
            out.append(field.name)
    return out


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_no_product_function_is_over_100_lines() -> None:
    long = [
        f"{path.relative_to(REPO)}::{name} ({length} lines)"
        for path in _product_files()
        for name, length in _functions(path)
        if length > MAX_FUNCTION_LINES
    ]
    assert not long, "functions over 100 lines: " + ", ".join(long)


def test_config_is_lean() -> None:
    fields = _leaf_fields(Config)
    assert "model.hidden_size" in fields and "gate.metric" in fields  # the walk reaches leaves
    assert len(fields) <= MAX_CONFIG_FIELDS, f"{len(fields)} config fields: {fields}"


def test_benchmarks_live_outside_the_product() -> None:
    assert not list((REPO / "recloop").glob("bench*.py"))
    assert (REPO / "benchmarks" / "quality.py").exists()


def test_comments_cite_only_the_repository() -> None:
    outside = re.compile(r"CONTRACT\.md|STACK\.md|STYLE\.md|\.\./shared/[A-Z]|\b[Ii]ssues? #?\d")
    hits = [
        f"{path.relative_to(REPO)}:{number}"
        for path in _product_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits, "citations of files outside the repository or of issues: " + ", ".join(hits)
