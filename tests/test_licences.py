"""No GPL in the default install: fieldpress's requirements without extras, followed transitively
through the installed metadata, each licence read from License-Expression, classifiers or License
(tests/helpers/licences.py, which also prints the pip-show-style list quoted in the README)."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import licences

HELPER = Path(licences.__file__)


def test_default_install_has_no_gpl_and_nothing_unknown() -> None:
    packages, missing = licences.default_install()
    assert not missing, missing
    names = {p.name for p in packages}
    assert {"torch", "numpy", "constriction", "av", "pytorch-msssim"} <= names  # direct and
    assert "typing-extensions" in names  # transitive (through torch) requirements are walked
    assert "plyfile" not in names and "hypothesis" not in names  # gone / an extra only
    bad = [(p.name, p.licence) for p in packages if p.gpl or p.unknown]
    assert not bad, bad


@pytest.mark.parametrize(("expression", "gpl"), [
    ("GPL-3.0-or-later", True), ("LGPL-2.1-only", True), ("AGPL-3.0", True), ("GPL-2.0+", True),
    ("MIT OR GPL-2.0-only", True), ("BSD-3-Clause", False), ("Apache-2.0 WITH LLVM-exception", False),
    ("MIT-CMU", False), ("BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0", False)])
def test_gpl_identifiers_are_recognised(expression: str, gpl: bool) -> None:
    assert bool(licences.GPL_ID.search(expression)) is gpl


class _Dist(md.Distribution):
    """A distribution whose metadata is given as text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def read_text(self, filename: str) -> str | None:
        return self.text if filename in ("METADATA", "PKG-INFO") else None

    def locate_file(self, path: str | Path) -> Path:
        return Path(path)


@pytest.mark.parametrize(("metadata", "gpl", "source"), [
    ("Name: plyfile\nVersion: 1.0\nLicense-Expression: GPL-3.0-or-later\n", True, "License-Expression"),
    ("Name: old\nVersion: 1\nClassifier: License :: OSI Approved :: GNU General Public License v3 (GPLv3)\n",
     True, "classifier"),
    ("Name: lesser\nVersion: 1\nClassifier: License :: OSI Approved :: GNU Lesser General Public License v2 "
     "or later (LGPLv2+)\n", True, "classifier"),
    ("Name: field\nVersion: 1\nLicense: GPLv2\n", True, "License"),
    ("Name: fine\nVersion: 1\nClassifier: License :: OSI Approved :: MIT License\n", False, "classifier"),
    ("Name: bare\nVersion: 1\n", False, "none"),
])
def test_licence_of_reads_each_metadata_field(metadata: str, gpl: bool, source: str) -> None:
    package = licences.licence_of(_Dist(metadata))
    assert (package.gpl, package.source) == (gpl, source)


def test_the_listing_script_exits_0_and_names_every_package() -> None:
    proc = subprocess.run([sys.executable, str(HELPER)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "GPL-family or unknown: none" in proc.stdout and "\ntorch " in proc.stdout
