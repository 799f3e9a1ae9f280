"""containerbatch.images: image kinds, SIF checks, cache names, and `containerbatch image convert`."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from containerbatch import images
from containerbatch.cli import image as image_cli
from containerbatch.errors import ConfigError
from tests.conftest import ROOT, run_cli

DEMO = ROOT / "images" / "demo" / "Dockerfile"
SIF_HEAD = images.SIF_LAUNCH.ljust(32, b"\0") + images.SIF_MAGIC + b"\0"


@pytest.mark.parametrize(
    ("image", "remote"),
    [
        ("docker://python:3.11", True),
        ("docker-daemon:cb-demo:latest", True),
        ("oras://ghcr.io/a/b:1", True),
        ("library://alpine:3", True),
        ("shub://x/y", True),
        ("https://example.org/a.sif", True),
        ("analysis.sif", False),
        ("/images/sandbox", False),
        ("./docker:tag", False),
    ],
)
def test_is_remote(image: str, remote: bool) -> None:
    assert images.is_remote(image) is remote


def test_image_format(tmp_path: Path) -> None:
    (tmp_path / "a.sif").write_bytes(SIF_HEAD + b"rest")
    (tmp_path / "b.sqsh").write_bytes(b"hsqs" + b"\0" * 60)
    (tmp_path / "c.sif").write_bytes(b"#!/usr/bin/env run-singularity\n" + b"\0" * 40)
    (tmp_path / "d.sif").write_bytes(b"")
    (tmp_path / "sandbox" / "bin").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    kinds = {
        name: images.image_format(tmp_path / name) for name in ("a.sif", "b.sqsh", "c.sif", "d.sif", "sandbox", "empty")
    }
    assert kinds == {
        "a.sif": "sif",
        "b.sqsh": "squashfs",
        "c.sif": None,
        "d.sif": None,
        "sandbox": "sandbox",
        "empty": None,
    }
    with pytest.raises(FileNotFoundError):
        images.image_format(tmp_path / "missing.sif")


def test_cache_names_are_safe_and_distinct() -> None:
    uris = [
        "docker://python:3.11",
        "docker://python:3.11-slim",
        "oras://ghcr.io/a/b:1",
        "docker://Python:3.11",
        "docker://a/b:c;rm -rf $HOME",
        "library://" + "x" * 300,
    ]
    names = [images.cache_name(u) for u in uris]
    assert len(set(names)) == len(names)
    for name in names:
        assert name.endswith(".sif") and "/" not in name and len(name) < 100
        assert all(c.isalnum() or c in "_.-" for c in name)
    assert images.cache_name(uris[0]) == images.cache_name("docker://python:3.11")


def test_conversion_argv() -> None:
    assert images.conversion_argv("apptainer", "/c/x.sif", "docker://a:1") == [
        "apptainer",
        "pull",
        "/c/x.sif",
        "docker://a:1",
    ]
    assert images.conversion_argv("singularity", "/c/x.sif", "docker-daemon:a:1") == [
        "singularity",
        "build",
        "/c/x.sif",
        "docker-daemon:a:1",
    ]


def test_convert_demo_dockerfile() -> None:
    text = images.convert_dockerfile(DEMO)
    lines = text.splitlines()
    assert lines[:2] == ["Bootstrap: docker", "From: cb-demo:latest"]
    assert "export CB_DEMO_FLAVOUR=extended" in text.split("%environment", 1)[1]
    assert 'echo "built from images/demo/Dockerfile" > /etc/cb-demo-release' in text.split("%post", 1)[1]
    assert text.endswith("\n")
    daemon = images.convert_dockerfile(DEMO, bootstrap="docker-daemon")
    assert daemon.splitlines()[:2] == ["Bootstrap: docker-daemon", "From: cb-demo:latest"]


def test_convert_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        images.convert_dockerfile(tmp_path / "Dockerfile")
    with pytest.raises(ConfigError, match="bootstrap"):
        images.convert_dockerfile(DEMO, bootstrap="shub")


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test root (so that `image` stays a sub-command)."""

    image_cli.register(app)
    return app


def test_cli_convert_writes_file_and_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "recipe.def"
    runner = CliRunner()
    result = runner.invoke(_app(), ["image", "convert", str(DEMO), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == images.convert_dockerfile(DEMO)
    again = runner.invoke(_app(), ["image", "convert", str(DEMO), "-o", str(target)])
    assert again.exit_code != 0 and isinstance(again.exception, ConfigError) and "--force" in str(again.exception)
    forced = runner.invoke(
        _app(), ["image", "convert", str(DEMO), "-o", str(target), "--force", "--bootstrap", "docker-daemon"]
    )
    assert forced.exit_code == 0 and target.read_text().startswith("Bootstrap: docker-daemon\n")


def test_cli_convert_to_stdout() -> None:
    result = CliRunner().invoke(_app(), ["image", "convert", str(DEMO)])
    assert result.exit_code == 0
    assert result.stdout == images.convert_dockerfile(DEMO)


def test_containerbatch_image_convert_command(tmp_path: Path) -> None:
    """The installed command (needs `image` registered in containerbatch/cli/__init__.py)."""
    proc = run_cli(["image", "convert", str(DEMO), "-o", "recipe.def"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "recipe.def").read_text() == images.convert_dockerfile(DEMO)
    missing = run_cli(["image", "convert", "nope/Dockerfile"], cwd=tmp_path)
    assert missing.returncode == 2 and "nope/Dockerfile does not exist" in missing.stderr
