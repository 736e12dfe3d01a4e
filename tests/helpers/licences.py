"""The licences of fieldpress's default install: its requirements without extras (this checkout's
pyproject.toml, plus the installed distribution's Requires-Dist), followed transitively through the
installed packages' metadata (importlib.metadata), each with the licence its metadata declares.

    python tests/helpers/licences.py      # one line per package, pip-show style; exit 1 on GPL

A package is GPL-family when its License-Expression names a GPL, LGPL or AGPL identifier, a licence
classifier says "GNU ... General Public License" (or GPL), or its one-line License field says GPL (a
License field holding a whole licence text is not searched: numpy's quotes the GCC runtime's).
A package with no licence information at all counts as unknown, which fails as well: a person has
to look at it.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
GPL_ID = re.compile(r"(?<![\w.-])(A|L)?GPL(-?v?[0-9.]+)?(-only|-or-later|\+)?(?![\w.])", re.IGNORECASE)
GPL_WORDS = re.compile(r"GNU (Affero |Lesser |Library )?General Public", re.IGNORECASE)


@dataclass(frozen=True)
class Package:
    """One installed package of the default install and what its metadata says about its licence."""

    name: str
    version: str
    licence: str  # the expression, else the classifiers, else the one-line License field
    source: str  # License-Expression, classifier, License, or none
    gpl: bool

    @property
    def unknown(self) -> bool:
        return self.source == "none"


def root_requirements() -> list[Requirement]:
    """fieldpress's requirements without extras: this checkout's and the installed distribution's."""
    texts = list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    try:
        texts += md.distribution("fieldpress").requires or []
    except md.PackageNotFoundError:
        pass
    return [r for r in map(Requirement, texts) if _applies(r)]


def _applies(req: Requirement) -> bool:
    """A requirement of the default install: its marker holds here with no extra asked for."""
    return req.marker is None or req.marker.evaluate({"extra": ""})


def licence_of(dist: md.Distribution) -> Package:
    """What the distribution's metadata says, and whether it is GPL-family."""
    meta = dist.metadata
    expression = (meta.get("License-Expression") or "").strip()
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    field = (meta.get("License") or "").strip()
    short = field if field and "\n" not in field and len(field) <= 200 else ""
    if expression:
        text, source = expression, "License-Expression"
    elif classifiers:
        text, source = "; ".join(c.split(" :: ")[-1] for c in classifiers), "classifier"
    elif short:
        text, source = short, "License"
    else:
        text, source = "(no licence in the metadata)", "none"
    said = [expression, short] + [c.split(" :: ")[-1] for c in classifiers]  # GPL anywhere counts
    gpl = any(GPL_ID.search(t) or GPL_WORDS.search(t) for t in said if t)
    return Package(canonicalize_name(meta["Name"]), dist.version, text, source, gpl)


def default_install() -> tuple[list[Package], list[str]]:
    """Every package the default install pulls in (sorted by name), and requirements not installed."""
    found: dict[str, Package] = {}
    missing: list[str] = []
    todo = root_requirements()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or name == "fieldpress":
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            missing.append(str(req))
            continue
        found[name] = licence_of(dist)
        todo += [r for r in map(Requirement, dist.requires or []) if _applies(r)]
    return sorted(found.values(), key=lambda p: p.name), sorted(set(missing))


def main() -> int:
    """Print one line per package; exit 1 when any is GPL-family, unknown or not installed."""
    packages, missing = default_install()
    for p in packages:
        flag = "  <- GPL" if p.gpl else ("  <- unknown" if p.unknown else "")
        print(f"{p.name:24} {p.version:16} {p.licence} [{p.source}]{flag}")
    for req in missing:
        print(f"{req:41} not installed")
    bad = [p.name for p in packages if p.gpl or p.unknown]
    print(f"{len(packages)} packages in the default install; "
          f"GPL-family or unknown: {', '.join(bad) or 'none'}")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
