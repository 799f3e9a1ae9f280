"""docs/settings.rst is the table generated from settings.DEFINITIONS; regenerate it when a setting changes."""

from __future__ import annotations

import io

import pytest

from containerbatch import docs
from containerbatch.settings import DEFINITIONS, Setting
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "settings.rst"
FIX = "regenerate it: python -m containerbatch.docs docs/settings.rst"


def test_committed_page_matches_the_definitions() -> None:
    assert PAGE.is_file(), f"docs/settings.rst is missing; {FIX}"
    assert PAGE.read_text(encoding="utf-8") == docs.render(), f"docs/settings.rst is out of date; {FIX}"


def test_every_setting_is_in_the_table_once() -> None:
    text = docs.render()
    for name, setting in DEFINITIONS.items():
        assert text.count(f"   * - ``{name}``\n") == 1
        assert f"``{setting.env_var}``" in text


def test_a_changed_definition_changes_the_table() -> None:
    changed = dict(DEFINITIONS)
    old = changed["lost_after"]
    changed["lost_after"] = Setting(old.name, old.convert, 90.0, old.help, old.type_name, old.group)
    assert docs.render(changed) != docs.render()
    assert "``90.0``" in docs.render(changed)


def test_escaping_keeps_text_plain() -> None:
    assert docs.escape("a *b* `c` x|y name_ end_") == r"a \*b\* \`c\` x\|y name\_ end\_"
    assert docs.escape("image_has_luigi") == "image_has_luigi"


def test_page_is_valid_restructuredtext() -> None:
    core = pytest.importorskip("docutils.core")
    warnings = io.StringIO()
    tree = core.publish_doctree(
        docs.render(), settings_overrides={"warning_stream": warnings, "report_level": 1, "halt_level": 5}
    )
    assert warnings.getvalue() == ""
    tables = [n for n in tree.findall() if n.tagname == "table"]
    rows = sum(len([r for r in t.findall() if r.tagname == "row"]) - 1 for t in tables)
    assert rows == len(docs.documented())  # the core and the shipped plugins


def test_main_help_and_bad_arguments_write_no_file(tmp_path, monkeypatch, capsys):
    """``--help`` prints the usage, an option-like or extra argument is refused: neither writes a file."""
    monkeypatch.chdir(tmp_path)
    assert docs.main(["--help"]) == 0
    assert "usage" in capsys.readouterr().out
    assert docs.main(["--bogus"]) == 2
    assert docs.main(["a.rst", "b.rst"]) == 2
    assert list(tmp_path.iterdir()) == []
    assert docs.main(["page.rst"]) == 0
    assert (tmp_path / "page.rst").read_text(encoding="utf-8").startswith(".. This file is generated")
