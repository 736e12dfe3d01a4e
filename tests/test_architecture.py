"""The layers of docs/ARCHITECTURE.md hold: every import in fieldpress/ (module level or inside a
function) follows an allowed edge, the parts form no cycle, and `fieldpress info` imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fieldpress"

# part -> the fieldpress parts it may import (docs/ARCHITECTURE.md, "Layers"). "__init__" is the
# package root (the version and the lazy public API), for the top layers only.
BASE = {"errors", "io", "runtime"}
CORE = BASE | {"codec", "engine", "metrics", "cli", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "io": {"errors"},
    "runtime": {"errors"},
    "cuda": {"errors"},
    "codec": BASE | {"cuda"},
    "metrics": BASE,
    "engine": BASE | {"codec", "cuda", "metrics"},
    "cli": BASE | {"codec", "__init__"},
    "__init__": {"codec"},
    "__main__": BASE | {"cli", "__init__"},
    "fields": CORE | {"cuda"},
    "video": CORE | {"cuda", "fields"},
    "scenes": CORE | {"cuda", "fields"},
    "fuzz": BASE | {"codec"},  # the fuzz harness: targets found through registries and entry points
    "batch": BASE | {"cli", "codec"},  # `fieldpress batch`: families only through their BATCH entries
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fieldpress":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> list[tuple[str, str, str]]:
    """(importing part, imported part, file:line) for every fieldpress import in the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        src = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                dst = _part(name)
                if dst is not None and dst != src:
                    out.append((src, dst, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return out


def test_every_import_follows_an_allowed_edge() -> None:
    bad = [f"{where}: {src} -> {dst}" for src, dst, where in _edges() if dst not in ALLOWED.get(src, set())]
    assert not bad, "imports the architecture forbids:\n" + "\n".join(bad)


def test_the_parts_form_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst, _ in _edges():
        graph.setdefault(src, set()).add(dst)

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph.get(a, ()))

    cycles = [(a, b) for a in graph for b in graph[a] if reaches(b, a, {b})]
    assert not cycles, f"import cycles between parts: {cycles}"


def test_only_command_modules_import_the_cli_layer() -> None:
    bad = [where for src, dst, where in _edges()
           if dst == "cli" and Path(where.split(":")[0]).name not in ("cli.py", "__main__.py")]
    assert not bad, "library modules importing fieldpress.cli:\n" + "\n".join(bad)


GOLDEN = sorted((ROOT / "tests" / "golden" / "codecs").glob("*/*.fp?"))


@pytest.mark.parametrize("suffix", [".fpv", ".fpi", ".fpg"])
def test_fieldpress_info_imports_no_torch(suffix: str) -> None:
    path = next(p for p in GOLDEN if p.suffix == suffix)
    code = ("import sys\nfrom fieldpress.cli import info_command\n"
            f"assert info_command([{str(path)!r}, '--json']) == 0\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton'))\n"
            "assert not heavy, heavy[:5]\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"codec"' in run.stdout
