import json

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
