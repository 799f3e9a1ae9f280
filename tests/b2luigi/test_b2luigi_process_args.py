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


def test_module_is_b2luigi_with_settings_reaching_both(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    b2luigi = pytest.importorskip("b2luigi")
    import containerbatch.b2luigi as cb2

    assert cb2.Task is b2luigi.Task and cb2.requires is b2luigi.requires and cb2.dispatch is b2luigi.dispatch
    assert not hasattr(cb2, "__path__")  # a module, not a second b2luigi package
    (workdir / "settings.json").write_text('{"result_dir": "from-file", "batch_system": "local"}')
    cb2.set_setting("my_key", [1, 2])
    cb2.set_setting("default_task_target_class", luigi.LocalTarget)  # JSON cannot carry it to the node
    try:
        assert b2luigi.get_setting("my_key") == [1, 2]
        assert containerbatch.get_setting("my_key") == [1, 2]
        assert cb2.get_setting("log_dir") == "logs"  # containerbatch's default, not b2luigi's ValueError
        with pytest.raises(ValueError):
            cb2.get_setting("set_nowhere")  # b2luigi's behaviour for its own keys
        with caplog.at_level("WARNING", logger="containerbatch.b2luigi"):
            snapshot = cb2.settings_snapshot()
        assert snapshot["my_key"] == [1, 2] and snapshot["result_dir"] == "from-file"
        assert snapshot["_dispatch_local_execution"] is True
        assert "default_task_target_class" not in snapshot and "module level" in caplog.text
    finally:
        cb2.clear_setting("my_key")
        cb2.clear_setting("default_task_target_class")
    assert containerbatch.get_setting("my_key") is None
