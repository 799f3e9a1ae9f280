"""containerbatch.process takes b2luigi's process() arguments instead of passing them to luigi.build."""

from __future__ import annotations

from pathlib import Path

import luigi
import pytest

import containerbatch
from containerbatch.errors import ConfigError


class Written(luigi.Task):
    runtime = "host"
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/{self.n}.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write(str(self.n))


def test_dry_run_prints_and_submits_nothing(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "results").mkdir()
    (workdir / "results" / "1.txt").write_text("1")
    assert containerbatch.process([Written(n=1), Written(n=2)], batch=True, dry_run=True) is True
    out = capsys.readouterr().out
    assert "Would run Written(n=2)" in out and "Written(n=1)" not in out and "In total 1" in out
    assert not (workdir / "logs").exists() and not (workdir / ".containerbatch").exists()


def test_batch_and_ignore_args_are_accepted(workdir: Path) -> None:
    ok = containerbatch.process([Written(n=3)], batch=True, ignore_additional_command_line_args=True)
    assert ok is True
    assert (workdir / "results" / "3.txt").read_text() == "3"


def test_b2luigi_only_arguments_point_to_containerbatch_b2luigi(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="containerbatch.b2luigi"):
        containerbatch.process([Written(n=4)], show_output=True)
    assert not (workdir / "logs").exists()
