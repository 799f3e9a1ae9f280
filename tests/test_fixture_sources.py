"""Every fixture says where it comes from: a public source (an upstream doc or repository file) or a capture
by a command in this repository, never a path outside the repository nor a private search index."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
OUTSIDE = re.compile(r"(?<![\w.:/-])/(work|home|root|srv|opt|mnt|shared)/")
# "found in the code index" names a private search index, which nobody else can check: name the public
# repository and file (or the upstream page) instead, or say plainly that it was not found.
PRIVATE_INDEX = re.compile(r"code[\s_-]*index", re.IGNORECASE)


def _json_fixtures() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.json") if isinstance(json.loads(p.read_text()), dict))


@pytest.mark.parametrize("path", _json_fixtures(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_json_fixture_cites_a_public_source(path: Path) -> None:
    data = json.loads(path.read_text())
    if "source" not in data:  # then its folder's README says how it was captured
        readme = path.parent / "README.md"
        assert readme.is_file(), f"{path} has no source and its folder no README.md"
        return
    source = str(data["source"])
    assert source.strip(), path
    assert not OUTSIDE.search(source), f"{path} cites a path outside the repository: {source}"
    assert not PRIVATE_INDEX.search(source), f"{path} cites a private code index, not a public source: {source}"


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("README*")), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_readme_cites_no_path_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert not OUTSIDE.search(text), f"{path} cites a path outside the repository"
