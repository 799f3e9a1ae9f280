import json
import os

import luigi
import pytest

import containerbatch
from containerbatch.errors import ConfigError
from containerbatch.settings import DEFINITIONS, SettingsResolver, clear_setting, get_setting, set_setting


class T(luigi.Task):
    image = "from-task:1"
    p = luigi.Parameter(default="x")


class Plain(luigi.Task):
    pass


def test_chain_order(workdir, monkeypatch):
    (workdir / "settings.json").write_text(json.dumps({"image": "file:1", "log_dir": "flogs", "batch_system": "local"}))
    resolver = SettingsResolver()
    assert resolver.resolve("image", T()).value == "from-task:1"
    assert resolver.resolve("image", T()).source == "task"
    assert resolver.resolve("image", Plain()).source.startswith("file ")
    assert resolver.resolve("image", Plain()).value == "file:1"
    monkeypatch.setenv("CONTAINERBATCH_IMAGE", "env:1")
    assert SettingsResolver().resolve("image", Plain()).value == "env:1"
    set_setting("image", "set:1")
    assert SettingsResolver().resolve("image", Plain()).value == "set:1"
    assert SettingsResolver().resolve("image", T()).value == "from-task:1"
    assert SettingsResolver().resolve("log_dir", Plain()).value == "flogs"
    assert SettingsResolver().resolve("result_dir", Plain()).source == "default"


def test_settings_file_in_parent_nearest_wins(workdir, monkeypatch):
    (workdir / "settings.json").write_text(json.dumps({"image": "parent:1", "log_dir": "plogs"}))
    child = workdir / "a" / "b"
    child.mkdir(parents=True)
    (workdir / "a" / "settings.json").write_text(json.dumps({"image": "child:1"}))
    monkeypatch.chdir(child)
    resolver = SettingsResolver()
    assert resolver.resolve("image").value == "child:1"
    assert resolver.resolve("log_dir").value == "plogs"


def test_b2luigi_settings_file_carries_over(workdir):
    # keys b2luigi knows that have no meaning here are accepted and ignored
    (workdir / "settings.json").write_text(
        json.dumps({"batch_system": "local", "result_dir": "res", "gbasf2_release": "x", "env_script": None})
    )
    assert SettingsResolver().resolve("result_dir").value == "res"


def test_unknown_names_are_custom_settings_typos_warned(workdir, monkeypatch, caplog):
    # as in b2luigi, any key is a custom setting that get_setting returns; one close to a setting's name warns
    with caplog.at_level("WARNING", logger="containerbatch.settings"):
        set_setting("imgae", "x")
    assert "Did you mean 'image'" in caplog.text
    assert get_setting("imgae") == "x"
    clear_setting("imgae")
    monkeypatch.setenv("CONTAINERBATCH_RUNTMIE", "docker")
    with pytest.raises(ConfigError, match="CONTAINERBATCH_RUNTMIE"):
        SettingsResolver()
    monkeypatch.delenv("CONTAINERBATCH_RUNTMIE")
    (workdir / "settings.json").write_text(json.dumps({"my_custom_key": {"a": 1}}))
    assert get_setting("my_custom_key") == {"a": 1}
    assert get_setting("not_set_anywhere", "dflt") == "dflt"
    assert get_setting("not_set_anywhere") is None


def test_wrong_types_name_setting_and_task(workdir):
    class Bad(luigi.Task):
        binds = 5

    with pytest.raises(ConfigError) as info:
        SettingsResolver().resolve("binds", Bad())
    assert "binds" in str(info.value) and "Bad" in str(info.value)


def test_env_var_json_values(workdir, monkeypatch):
    monkeypatch.setenv("CONTAINERBATCH_BINDS", '["/tmp:/data:ro"]')
    monkeypatch.setenv("CONTAINERBATCH_ENV", '{"A": "1"}')
    monkeypatch.setenv("CONTAINERBATCH_POLL_INTERVAL", "2.5")
    resolver = SettingsResolver()
    assert resolver.resolve("binds").value == ["/tmp:/data:ro"]
    assert resolver.resolve("env").value == {"A": "1"}
    assert resolver.resolve("poll_interval").value == 2.5


def test_get_setting_like_b2luigi(workdir):
    assert get_setting("batch_system") == "local"
    assert get_setting("image", default="dflt") == "dflt"
    assert get_setting("image", task=T(), default="dflt") == "from-task:1"
    assert containerbatch.get_setting is get_setting


def test_every_definition_has_help_and_valid_default():
    for setting in DEFINITIONS.values():
        assert setting.help and setting.type_name
        if setting.default is not None:
            setting.convert(setting.default)


# -- b2luigi compatibility ------------------------------------------------------


def test_b2luigi_keys_translate(workdir):
    (workdir / "data").mkdir()
    (workdir / "settings.json").write_text(
        json.dumps(
            {
                "apptainer_image": "/images/belle2.sif",
                "apptainer_mounts": ["data"],
                "apptainer_additional_params": "--nv --cleanenv",
                "apptainer_cmd": "singularity",
                "queue": "short",
                "job_slots": 4,
                "slurm_settings": {"partition": "debug", "mem": "2G"},
            }
        )
    )

    class T(luigi.Task):
        slurm_settings = {"mem": "8G"}
        resources = {"memory": "1GB"}

    values = SettingsResolver().values(T())
    assert values["image"] == "/images/belle2.sif" and values["runtime"] == "apptainer"
    assert values["binds"] == ["data"]
    assert values["apptainer_extra_args"] == ["--nv", "--cleanenv"]
    assert values["apptainer_binary"] == "singularity"
    assert values["resources"] == {"memory": "1GB", "queue": "short", "cpus": 4}
    # merged as b2luigi merges: the file's options updated by the task's
    assert values["slurm_extra_args"] == ["--partition=debug", "--mem=8G"]
    # a setting of containerbatch's own wins over the b2luigi key
    set_setting("image", "other:1")
    assert SettingsResolver().values(T())["image"] == "other:1"


def test_htcondor_settings_merge_like_b2luigi(workdir):
    (workdir / "settings.json").write_text(json.dumps({"htcondor_settings": {"+JobFlavour": "longlunch", "a": "1"}}))

    class T(luigi.Task):
        htcondor_settings = {"a": "2", "request_cpus": 2}

    assert SettingsResolver().resolve("htcondor_settings", T()).value == {
        "+JobFlavour": "longlunch",
        "a": "2",
        "request_cpus": "2",
    }
    assert SettingsResolver().resolve("htcondor_settings").value == {"+JobFlavour": "longlunch", "a": "1"}


def test_batch_system_auto_detects_like_b2luigi(workdir, monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    set_setting("batch_system", "auto")
    assert get_setting("batch_system") == "local"
    for name, expected in (("sbatch", "slurm"), ("condor_submit", "htcondor"), ("bsub", "lsf")):
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
        assert get_setting("batch_system") == expected  # LSF before HTCondor before Slurm, as b2luigi
    assert SettingsResolver(defaults={"batch_system": "auto"}).resolve("batch_system").value == "lsf"
    set_setting("batch_system", "gbasf2")
    with pytest.raises(ConfigError, match="gbasf2.*b2luigi itself"):
        get_setting("batch_system")


def test_b2luigi_keys_without_effect_warn_once(workdir, caplog):
    from containerbatch import settings

    settings._warned.discard("task_file_dir")
    (workdir / "settings.json").write_text(json.dumps({"task_file_dir": "tf", "use_parameter_name_in_output": False}))
    with caplog.at_level("WARNING", logger="containerbatch.settings"):
        SettingsResolver()
        SettingsResolver()
        set_setting("task_file_dir", "x")
    assert caplog.text.count("'task_file_dir'") == 1
    assert "use_parameter_name_in_output" not in caplog.text  # b2luigi's own: takes effect through b2luigi
    assert get_setting("use_parameter_name_in_output") is False


def test_get_setting_takes_b2luigis_positional_order(workdir):
    set_setting("job_name", "from-set")
    assert get_setting("job_name", "dflt") == "from-set"
    clear_setting("job_name")
    assert get_setting("job_name", "dflt") == "dflt"
    assert get_setting("image", "dflt", T()) == "from-task:1"
    assert get_setting("image", T()) == "from-task:1"  # the earlier (name, task) order still works


def test_b2luigi_set_setting_reaches_containerbatch(workdir):
    b2settings = pytest.importorskip("b2luigi.core.settings")
    b2settings.set_setting("env_script", None)
    b2settings.set_setting("batch_system", "slurm")
    try:
        assert get_setting("batch_system") == "slurm"
        assert SettingsResolver().resolve("batch_system").source == "b2luigi.set_setting"
    finally:
        b2settings.clear_setting("batch_system")
        b2settings.clear_setting("env_script")


def test_b2luigi_settings_json_variable_names_the_file(workdir, monkeypatch, tmp_path):
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"result_dir": "from-variable"}))
    (workdir / "settings.json").write_text(json.dumps({"result_dir": "from-cwd"}))
    monkeypatch.setenv("B2LUIGI_SETTINGS_JSON", str(other))
    assert SettingsResolver().resolve("result_dir").value == "from-variable"


def test_built_in_schedulers_declare_their_settings_through_the_plugin_contract():
    """slurm_*, lsf_*, htcondor_*, sge_* come from each scheduler's SETTINGS (as a third party's would),
    with the names, defaults and environment variables they always had; the core keeps none of them."""
    import subprocess
    import sys

    from containerbatch import plugins, settings

    settings._with_plugins()
    for name in plugins.schedulers.names():
        assert [n for n, s in DEFINITIONS.items() if n.startswith(f"{name}_") and not s.owner] == [], name
    expected = {
        "slurm_extra_args": ("slurm", []),
        "lsf_extra_args": ("lsf", []),
        "lsf_memory_unit": ("lsf", "MB"),
        "htcondor_settings": ("htcondor", {}),
        "htcondor_container_mode": ("htcondor", "wrap"),
        "sge_pe": ("sge", "smp"),
    }
    for name, (owner, default) in expected.items():
        definition = DEFINITIONS[name]
        assert (definition.owner, definition.default, definition.group) == (
            f"scheduler plugin {owner!r}",
            default,
            "scheduler",
        )
        assert definition.env_var == "CONTAINERBATCH_" + name.upper()
    code = (
        "from containerbatch import settings\n"
        "print(settings.get_setting('lsf_memory_unit'), settings.get_setting('htcondor_settings'))\n"
    )
    env = {"CONTAINERBATCH_LSF_MEMORY_UNIT": "GB", "CONTAINERBATCH_HTCONDOR_SETTINGS": '{"+JobFlavour": "x"}'}
    fresh = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert fresh.stdout == "GB {'+JobFlavour': 'x'}\n", fresh.stderr
    bad = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CONTAINERBATCH_LSF_MEMORY_UNIT": "TB"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "lsf_memory_unit" in bad.stderr
