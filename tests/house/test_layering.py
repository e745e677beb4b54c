"""The house reads top-down: graphc (API, CLI, front end) -> {graphc.passes, graphc.runtime} ->
graphc.ir. No module imports a layer above its own, nor a sibling layer (passes and runtime
never import each other), at module level or inside a function. And graphc is the only
top-level name the install adds: a user's own ir.py, passes.py or runtime.py never shadows it."""
from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FOLDERS = {"ir": "graphc.ir", "passes": "graphc.passes", "runtime": "graphc.runtime",
           "graphc": "graphc"}
RANK = {"graphc.ir": 0, "graphc.passes": 1, "graphc.runtime": 1, "graphc": 2}


def layer(module: str) -> str | None:
    for name in ("graphc.ir", "graphc.passes", "graphc.runtime"):
        if module == name or module.startswith(name + "."):
            return name
    return "graphc" if module.split(".")[0] == "graphc" else None


def upward_imports(root: pathlib.Path) -> list[str]:
    """``file:line own -> imported`` for every import of a layer not below the file's own."""
    bad = []
    for folder, own in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    other = layer(name)
                    if other is not None and other != own and RANK[other] >= RANK[own]:
                        bad.append(f"{path.relative_to(root)}:{node.lineno} {own} -> {name}")
    return bad


def test_no_module_imports_up_or_sideways() -> None:
    assert upward_imports(ROOT) == []


def test_the_check_finds_a_planted_upward_import(tmp_path: pathlib.Path) -> None:
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    planted = tmp_path / "ir" / "types.py"
    planted.write_text(planted.read_text()
                       + "\n\ndef _late():\n    from graphc.passes import dce\n")
    (tmp_path / "runtime" / "plan.py").write_text(
        (tmp_path / "runtime" / "plan.py").read_text() + "\nimport graphc.passes.fusion\n")
    found = upward_imports(tmp_path)
    assert any(f.startswith("ir/types.py") and "graphc.passes" in f for f in found), found
    assert any(f.startswith("runtime/plan.py") and "graphc.passes.fusion" in f for f in found)


def test_users_files_named_like_the_layers_do_not_shadow_graphc(tmp_path: pathlib.Path) -> None:
    for name in ("ir", "passes", "runtime"):
        (tmp_path / f"{name}.py").write_text("raise RuntimeError('the user\\'s own module')\n")
    program = ("import numpy as np, graphc\n"
               "m = graphc.compile_source('graph g {\\n input x: f32[N]\\n"
               " output y = x * 2.0\\n}\\n', backend='interp')\n"
               "print(float(m(x=np.ones(3, np.float32))['y'].sum()))\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6.0"
