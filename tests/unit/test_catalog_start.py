"""Reading the catalog at a command's start: the built-in records' tiny kinds are checked here, once, instead of
at every start (which would import the tiny-model builders); a user's record is still checked when read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stablekit.errors import CatalogError
from stablekit.registry import BUILTIN_CATALOG, _read_toml, load_registry
from stablekit.testing.tiny import TINY_KINDS


def test_every_built_in_tiny_kind_is_one_the_builders_know():
    records = _read_toml(BUILTIN_CATALOG)["models"]
    kinds = {record["tiny"] for record in records.values() if "tiny" in record}
    assert kinds and kinds <= set(TINY_KINDS), kinds - set(TINY_KINDS)


def test_a_user_record_with_an_unknown_kind_is_refused(stablekit_home):
    (stablekit_home / "catalog.toml").write_text(
        '[models.my-tiny]\nextends = "tiny-sd"\ntiny = "sd9"\n')
    with pytest.raises(CatalogError, match="unknown kind 'sd9'"):
        load_registry()


def test_reading_the_catalog_imports_no_tiny_builder():
    script = ("import sys\nfrom stablekit.registry import load_registry\nassert load_registry().get('tiny-sd')\n"
              "print(sorted(m for m in sys.modules if m.startswith('stablekit.testing')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
