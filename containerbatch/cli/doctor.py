"""``containerbatch doctor``: what is installed and reachable, and how to fix what is not."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from containerbatch import plugins
from containerbatch.cli.common import EXIT_FAILED, EXIT_OK, out
from containerbatch.cli.display import print_json
from containerbatch.errors import ConfigError, SchedulerError
from containerbatch.jobfiles import write_private

MIN_PYTHON = (3, 10)

#: what the image probe runs with the image's python: version and whether luigi imports
_PROBE_CODE = (
    "import json, sys\n"
    "try:\n import luigi; has = getattr(luigi, '__version__', 'yes')\n"
    "except Exception: has = None\n"
    "print('CB-DOCTOR ' + json.dumps({'python': list(sys.version_info[:3]), 'executable': sys.executable,"
    " 'luigi': has}))\n"
)


@dataclass
class Check:
    """One line of the doctor's findings."""

    section: str
    name: str
    ok: bool
    detail: str
    fix: str = ""
    requested: bool = False

    @property
    def problem(self) -> bool:
        return not self.ok and self.requested


def check_settings(checks: list[Check]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    from containerbatch.settings import SettingsResolver

    try:
        resolved = list(SettingsResolver().all())
    except ConfigError as exc:
        checks.append(
            Check(
                "settings",
                "settings",
                False,
                str(exc),
                "fix the setting named above (environment variable CONTAINERBATCH_<NAME> or settings.json)",
                requested=True,
            )
        )
        return None, []
    rows = [{"name": r.name, "value": r.value, "source": r.source} for r in resolved]
    return {r.name: r.value for r in resolved}, rows


def check_plugins(checks: list[Check]) -> list[dict[str, Any]]:
    rows = []
    plugins.load_settings()  # a plugin whose settings clash is listed as broken too
    for registry, section in ((plugins.schedulers, "scheduler plugin"), (plugins.runtimes, "runtime plugin")):
        registry.load_all()
        targets = registry.targets()
        for name in registry.names():
            error = registry.errors.get(name)
            rows.append({"kind": registry.kind, "name": name, "target": targets.get(name, ""), "error": error})
            if error:
                checks.append(
                    Check(
                        section,
                        name,
                        False,
                        f"{targets.get(name, '')} fails to load: {error}",
                        f"reinstall the package that provides {name!r} (pip install …) or remove its entry point",
                    )
                )
    return rows


def _plugin_bug(section: str, name: str, exc: Exception, requested: bool) -> Check:
    return Check(
        section,
        name,
        False,
        f"the {name} plugin raised {type(exc).__name__}: {exc}",
        f"report it to the authors of the {name!r} plugin; run with another {section} meanwhile",
        requested,
    )


def check_schedulers(checks: list[Check], values: dict[str, Any], wanted: str) -> None:
    from containerbatch.schedulers.base import run_command

    for name in plugins.schedulers.names():
        requested = name == wanted
        try:
            scheduler = plugins.schedulers.get(name)({**values, "batch_system": name})
            ok, detail = scheduler.available()
            argv = scheduler.probe_argv() if ok else None
        except ConfigError as exc:
            if requested:
                checks.append(
                    Check("batch system", name, False, str(exc), "see the plugin error above", requested=True)
                )
            continue
        except Exception as exc:  # a plugin's own bug: listed, never a traceback
            checks.append(_plugin_bug("batch system", name, exc, requested))
            continue
        if not ok:
            checks.append(
                Check(
                    "batch system",
                    name,
                    False,
                    detail,
                    f"run on a submit host of {name}, or put its commands ({', '.join(scheduler.commands)}) on PATH",
                    requested,
                )
            )
            continue
        if argv:
            try:
                result = run_command(argv, timeout=20)
            except SchedulerError as exc:
                checks.append(
                    Check(
                        "batch system",
                        name,
                        False,
                        str(exc).splitlines()[0],
                        f"is the {name} controller up? try `{' '.join(argv)}` yourself",
                        requested,
                    )
                )
                continue
            if result.exit_code != 0:
                checks.append(
                    Check(
                        "batch system",
                        name,
                        False,
                        f"`{' '.join(argv)}` exited {result.exit_code}: "
                        f"{(result.stderr or result.stdout).strip()[-300:]}",
                        f"the {name} commands are installed but the daemons do not answer; check the "
                        "cluster configuration and that its controller is running",
                        requested,
                    )
                )
                continue
            detail += f"; `{' '.join(argv)}` answers"
        checks.append(Check("batch system", name, True, detail, requested=requested))


def check_runtimes(checks: list[Check], values: dict[str, Any], wanted: str | None) -> None:
    for name in plugins.runtimes.names():
        requested = name == wanted
        try:
            ok, detail = plugins.runtimes.get(name)(values).available()
        except ConfigError as exc:
            if requested:
                checks.append(
                    Check("container engine", name, False, str(exc), "see the plugin error above", requested=True)
                )
            continue
        except Exception as exc:  # a plugin's own bug: listed, never a traceback
            checks.append(_plugin_bug("container engine", name, exc, requested))
            continue
        fix = "" if ok else f"install {name} or pick another engine with --runtime / the runtime setting"
        checks.append(Check("container engine", name, ok, detail, fix, requested))


def _clean_up(commands: list[tuple[list[str], str | None]]) -> None:
    for argv, _ in commands:
        try:
            subprocess.run(argv, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass


def check_image(checks: list[Check], values: dict[str, Any], image: str, runtime_name: str) -> dict[str, Any]:
    """Is the image there, does python3 ≥ 3.10 start in it, and does it bring luigi?"""
    import luigi

    from containerbatch.spec import build_spec

    found: dict[str, Any] = {"image": image, "runtime": runtime_name}
    if runtime_name == "host":
        checks.append(Check("image", image, True, "runtime host runs no container; the image is not used"))
        return found
    try:
        runtime = plugins.runtimes.get(runtime_name)(values)
    except ConfigError as exc:
        checks.append(Check("image", image, False, str(exc), "fix the runtime plugin first", requested=True))
        return found

    class ContainerbatchDoctorProbe(luigi.Task):
        pass

    with tempfile.TemporaryDirectory(prefix="cb-doctor-") as tmp:
        executable = list(values.get("executable") or ["python3"])
        probe_values = {
            **values,
            "image": image,
            "runtime": runtime_name,
            "working_dir": tmp,
            "executable": [*executable, "-c", _PROBE_CODE],
            "env_script": None,
        }
        try:
            spec = build_spec(ContainerbatchDoctorProbe(), probe_values, f"doctor-{os.getpid()}-{int(time.time())}")
            for folder in (spec.result_dir, spec.log_dir, spec.job_dir):
                Path(folder).mkdir(parents=True, exist_ok=True)
            runtime.preflight(spec)
        except ConfigError as exc:
            checks.append(
                Check("image", image, False, str(exc), f"make {image!r} available to {runtime_name}", requested=True)
            )
            found["present"] = False
            return found
        found["present"] = True
        argv = runtime.command(spec)
        env = {**os.environ, **runtime.exports(spec)}
        for name, text in runtime.private_files(spec).items():  # e.g. Docker's --env-file
            write_private(os.path.join(spec.job_dir, name), text)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as exc:
            checks.append(
                Check(
                    "image",
                    image,
                    False,
                    f"cannot start a container: {exc}",
                    f"check `{runtime_name}` by hand",
                    requested=True,
                )
            )
            return found
        finally:
            _clean_up(runtime.epilogue(spec))  # the probe leaves no container behind
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CB-DOCTOR ")), None)
    if proc.returncode != 0 or line is None:
        why = (proc.stderr or proc.stdout).strip()[-400:]
        fix = (
            "install python3 (>= 3.10) in the image, or point the executable setting at its interpreter"
            if proc.returncode in (126, 127)
            else f"try the command yourself: {' '.join(argv[:8])} …"
        )
        checks.append(
            Check(
                "image",
                image,
                False,
                f"{executable[0]} did not run in the image (exit {proc.returncode}): {why}",
                fix,
                requested=True,
            )
        )
        return found
    try:  # the image's own words: untrusted, checked before use
        info = json.loads(line[len("CB-DOCTOR ") :])
        version = tuple(int(v) for v in info["python"])
        info["luigi"] = str(info["luigi"]) if info["luigi"] else None
        info["executable"] = str(info["executable"])
    except (ValueError, KeyError, TypeError, RecursionError):
        reply = line[:200]
        checks.append(
            Check("image", image, False, f"the probe in the image answered garbage: {reply!r}", "", requested=True)
        )
        return found
    found.update(python=".".join(map(str, version)), luigi=info["luigi"])
    checks.append(
        Check(
            "image",
            f"{image}: python",
            version >= MIN_PYTHON,
            f"{info['executable']} {found['python']}",
            ""
            if version >= MIN_PYTHON
            else "use an image with python >= 3.10 (or set executable to a newer interpreter in it)",
            requested=True,
        )
    )
    bundle = values.get("bundle", "auto")
    if info["luigi"]:
        hint = "" if values.get("image_has_luigi") else " (set image_has_luigi=true to skip binding the bundle)"
        checks.append(Check("image", f"{image}: luigi", True, f"luigi {info['luigi']} in the image{hint}"))
    elif bundle == "never":
        checks.append(
            Check(
                "image",
                f"{image}: luigi",
                False,
                "no luigi in the image and bundle=never",
                "set bundle to auto (containerbatch binds its own luigi) or install luigi in the image",
                requested=True,
            )
        )
    else:
        checks.append(
            Check(
                "image",
                f"{image}: luigi",
                True,
                f"no luigi in the image; containerbatch binds its bundle (bundle={bundle})",
            )
        )
    return found


def diagnose(image: str | None, batch_system: str | None, runtime: str | None) -> dict[str, Any]:
    """Every check, as data: the ``--json`` document."""
    from containerbatch.spec import guess_runtime

    checks: list[Check] = []
    values, settings_rows = check_settings(checks)
    plugin_rows = check_plugins(checks)
    values = values or {}
    wanted_scheduler = batch_system or values.get("batch_system") or "local"
    image = image or values.get("image")
    wanted_runtime = runtime or values.get("runtime") or "auto"
    if wanted_runtime == "auto":
        try:
            wanted_runtime = guess_runtime(image)
        except ConfigError as exc:
            checks.append(Check("container engine", "auto", False, str(exc), "set the runtime setting", True))
            wanted_runtime = "auto"
    for registry, wanted, section in (
        (plugins.schedulers, wanted_scheduler, "batch system"),
        (plugins.runtimes, wanted_runtime, "container engine"),
    ):
        if wanted not in registry.names():
            checks.append(
                Check(
                    section,
                    wanted,
                    False,
                    f"no {registry.kind} plugin named {wanted!r}",
                    f"use one of {', '.join(registry.names())}, or install the plugin that provides it",
                    requested=True,
                )
            )
    check_schedulers(checks, values, wanted_scheduler)
    check_runtimes(checks, values, wanted_runtime)
    image_info = check_image(checks, values, image, wanted_runtime) if image and settings_rows else None
    return {
        "user": getpass.getuser(),
        "requested": {"batch_system": wanted_scheduler, "runtime": wanted_runtime, "image": image},
        "checks": [asdict(c) | {"problem": c.problem} for c in checks],
        "image": image_info,
        "plugins": plugin_rows,
        "settings": settings_rows,
        "problems": [asdict(c) for c in checks if c.problem],
    }


def _mark(check: dict[str, Any]) -> Text:
    if check["ok"]:
        return Text("ok", style="green")
    return Text("BROKEN" if check["requested"] else "missing", style="bold red" if check["requested"] else "dim")


def show(report: dict[str, Any]) -> None:
    req = report["requested"]
    out.print(
        f"[bold]containerbatch doctor[/]: batch system [bold]{req['batch_system']}[/], runtime "
        f"[bold]{req['runtime']}[/], image [bold]{req['image'] or '-'}[/]",
        highlight=False,
    )
    table = Table(header_style="bold", title_justify="left", title="what is installed and reachable")
    for column in ("", "what", "name", "state", "detail"):
        table.add_column(column, overflow="fold")
    for check in report["checks"]:
        table.add_row(
            "*" if check["requested"] else "", check["section"], check["name"], _mark(check), Text(check["detail"])
        )
    out.print(table)
    plugins_table = Table(header_style="bold", title_justify="left", title="plugins (entry points)")
    for column in ("kind", "name", "target", "loads"):
        plugins_table.add_column(column, overflow="fold")
    for row in report["plugins"]:
        plugins_table.add_row(
            row["kind"],
            row["name"],
            row["target"],
            Text("ok", style="green") if not row["error"] else Text(row["error"], style="red"),
        )
    out.print(plugins_table)
    settings_table = Table(header_style="bold", title_justify="left", title="settings in force")
    for column in ("setting", "value", "from"):
        settings_table.add_column(column, overflow="fold")
    for row in report["settings"]:
        settings_table.add_row(
            row["name"],
            Text(json.dumps(row["value"], default=str)),
            Text(row["source"], style="dim" if row["source"] == "default" else "bold"),
        )
    out.print(settings_table)
    if not report["problems"]:
        out.print("[green]no problem with what was asked for[/] (* marks it)")
        return
    out.print(f"[bold red]{len(report['problems'])} problem(s):[/]")
    for problem in report["problems"]:
        out.print(
            Text.assemble(("• ", "red"), (f"{problem['section']} {problem['name']}: ", "bold"), problem["detail"])
        )
        if problem["fix"]:
            out.print(Text.assemble(("  fix: ", "bold green"), problem["fix"]))


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        image: str = typer.Option(None, "--image", help="Check this image (default: the image setting)."),
        batch_system: str = typer.Option(None, "--batch-system", help="The batch system you mean to use."),
        runtime: str = typer.Option(None, "--runtime", help="The container engine you mean to use."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    ) -> None:
        """Check batch systems, container engines, the image, plugins and the settings in force.

        Exit code 0 when what is asked for (the batch system, runtime and image given or set) works,
        1 when some of it is broken; every problem is printed with its fix.
        """
        report = diagnose(image, batch_system, runtime)
        if as_json:
            print_json(report)
        else:
            show(report)
        raise typer.Exit(EXIT_FAILED if report["problems"] else EXIT_OK)
