import luigi
import pytest

from containerbatch.errors import ConfigError
from containerbatch.settings import SettingsResolver
from containerbatch.spec import Resources, build_spec, guess_runtime, parse_duration, parse_memory


@pytest.mark.parametrize(
    "text,mib",
    [("4GB", 3815), ("4 GiB", 4096), ("512MB", 489), ("512MiB", 512), (2048, 2048), ("1.5g", 1431), ("100k", 1)],
)
def test_memory(text, mib):
    assert parse_memory(text) == mib


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("2h", 7200),
        ("90min", 5400),
        ("1:30:00", 5400),
        ("30:00", 1800),
        ("1-00:00:00", 86400),
        ("1h30m", 5400),
        (600, 600),
        ("45s", 45),
    ],
)
def test_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["4 parsecs", "lots", "-1GB", ""])
def test_bad_memory(bad):
    with pytest.raises(ValueError):
        parse_memory(bad)


@pytest.mark.parametrize("bad", ["2 fortnights", "soon", "1:xx", 0, "0h"])
def test_bad_duration(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_resources_errors_name_task_and_setting():
    with pytest.raises(ConfigError) as info:
        Resources.parse({"memory": "4 parsecs"}, task="Fit_a_123")
    assert "resources" in str(info.value) and "Fit_a_123" in str(info.value)
    with pytest.raises(ConfigError, match="memroy"):
        Resources.parse({"memroy": "4GB"})
    # integer entries with other names are luigi scheduler resources
    assert Resources.parse({"db_connections": 1, "cpus": 2}).cpus == 2


def test_runtime_guess(tmp_path):
    assert guess_runtime(None) == "host"
    assert guess_runtime("analysis.sif") == "apptainer"
    assert guess_runtime("docker://python:3.12") == "apptainer"
    assert guess_runtime("cb-demo:latest") == "docker"
    assert guess_runtime(str(tmp_path)) == "apptainer"


class Odd(luigi.Task):
    name = luigi.Parameter()
    image = "cb-demo:latest"
    resources = {"memory": "1GB", "walltime": "10min"}


def test_build_spec_paths_and_values(workdir):
    task = Odd(name="a b")
    spec = build_spec(task, SettingsResolver().values(task), "run1")
    assert spec.runtime == "docker"
    assert spec.job_dir.startswith(str(workdir / "logs" / "Odd"))
    assert spec.job_dir.endswith("attempt-1")
    assert spec.resources.memory_mb == 954 and spec.resources.walltime_s == 600
    assert spec.params == {"name": "a b"}
    second = spec.with_attempt(2)
    assert second.job_dir.endswith("attempt-2") and second.marker_path != spec.marker_path


def test_runtime_without_image_is_config_error(workdir):
    class NoImage(luigi.Task):
        runtime = "docker"

    with pytest.raises(ConfigError, match="needs an image"):
        build_spec(NoImage(), SettingsResolver().values(NoImage()), "r")
