"""The code's layout as README ("How the code is laid out") and DESIGN.md state it: one folder per layer, imports
only pointing down (ui → conversation → engines → runtime → checkpoint → kernels), the modules at yi_cli's top
(errors, paths, durable, inputs, ...) below them all. Read from the source (ast), imports inside functions too:
a lazy import that points up is still a layer that depends on the one above it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yi_cli"
LAYERS = ["kernels", "checkpoint", "runtime", "engines", "conversation", "ui"]  # bottom first
ENTRIES = {"yi_cli", "yi_cli.launch", "yi_cli.__main__"}  # the package's load() and the command: above every layer
BOTTOM = -1  # a module at yi_cli's top


def rank(module: str) -> int:
    parts = module.split(".")
    if module in ENTRIES:
        return len(LAYERS)
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else BOTTOM


def name_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each yi_cli module `path` imports; `from . import x` names x as a module."""
    me = name_of(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "yi_cli"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                if node.module:
                    out.append((node.lineno, ".".join([*base, node.module])))
                else:
                    out += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
            elif node.module and node.module.split(".")[0] == "yi_cli":
                out.append((node.lineno, node.module))
    return out


def upward(path: Path) -> list[str]:
    me = name_of(path)
    return [f"{me}:{line} imports {target}" for line, target in imports(path) if rank(target) > rank(me)]


def test_the_layers_are_the_packages_folders():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(LAYERS)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    assert upward(path) == []


def test_an_import_that_points_up_is_found(tmp_path, monkeypatch):
    """The check itself: a kernel importing the conversation, a bottom module importing a layer, relative and
    absolute, at a module's top or inside a function."""
    layer = tmp_path / "yi_cli" / "kernels"
    layer.mkdir(parents=True)
    bad = layer / "bad.py"
    bad.write_text(
        "from ..conversation import chat\nimport os\n\n\n"
        "def f():\n    import yi_cli.ui.render\n    from . import glue\n"
    )
    top = tmp_path / "yi_cli" / "errors2.py"
    top.write_text("from .engines.events import Stats\nfrom . import paths\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "yi_cli")
    assert upward(bad) == [
        "yi_cli.kernels.bad:1 imports yi_cli.conversation",
        "yi_cli.kernels.bad:6 imports yi_cli.ui.render",
    ]
    assert upward(top) == ["yi_cli.errors2:1 imports yi_cli.engines.events"]


HEAVY = ("torch", "transformers", "triton", "safetensors", "huggingface_hub")


def test_the_layers_above_the_runtime_import_no_torch():
    """README: the REPL loop and everything above engines/local.py import no torch (a remote chat, `yi-chat
    sessions`, a usage error answer without loading it). Every module of ui, conversation and engines imported in
    a fresh interpreter: none of the heavy packages is loaded."""
    import subprocess

    names = [name_of(p) for layer in ("ui", "conversation", "engines") for p in sorted((PACKAGE / layer).glob("*.py"))]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n    importlib.import_module(name)\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert p.returncode == 0, p.stderr
    assert len(names) > 30 and p.stdout.split() == []
