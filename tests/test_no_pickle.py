"""No pickle anywhere in the package: nothing imports pickle-like modules or calls `pickle.load`,
`torch.load` always passes weights_only=True, and numpy loading never sets allow_pickle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fieldpress"
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


FALSE = ast.Constant(False)


def _is_const(node: ast.expr | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def offenses(source: str, where: str = "<src>") -> list[str]:
    """Every pickle-reaching import or call in one Python source."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = ({a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import)
                    else {(node.module or "").split(".")[0]})
            if isinstance(node, ast.ImportFrom) and node.module == "torch":
                mods |= {"torch.load" for a in node.names if a.name == "load"}
            bad = mods & (FORBIDDEN_MODULES | {"torch.load"})
            if bad:
                found.append(f"{where}:{node.lineno}: imports {sorted(bad)}")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if func.split(".")[-1] in ("load", "loads", "Unpickler") and "pickle" in func:
                found.append(f"{where}:{node.lineno}: {func}")
            elif func == "torch.load" and not _is_const(kw.get("weights_only"), True):
                found.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            elif func in ("np.load", "numpy.load") and not _is_const(kw.get("allow_pickle", FALSE), False):
                found.append(f"{where}:{node.lineno}: {func} with allow_pickle")
    return found


def test_package_never_unpickles() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    problems = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        problems += offenses(text, str(path.relative_to(PACKAGE.parent)))
        if "pickle.load" in text:
            problems.append(f"{path.relative_to(PACKAGE.parent)}: mentions pickle.load")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_offenders() -> None:
    bad = ("import torch, pickle\nimport numpy as np\nx = torch.load('f.pt')\n"
           "y = torch.load('g', weights_only=False)\nz = torch.load('h', weights_only=True)\n"
           "w = np.load('a.npy', allow_pickle=True)\nv = pickle.loads(b'')\nfrom torch import load\n")
    lines = sorted(int(o.split(":")[1]) for o in offenses(bad))
    assert lines == [1, 3, 4, 6, 7, 8]
