"""The layering contract of docs/architecture.rst, checked on the source (an AST walk, like import-linter's
``layers`` contract): a module imports only from its own layer or the layers below, at module level or
inside a function.  Every module must be placed in a layer, so a new one is placed deliberately.

Also: the built-in plugins do not import each other, the Grid Engine module and the out-of-tree example
plugin use only the public contract, and the node-side runner imports only the standard library and luigi.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "containerbatch"

#: top to bottom, as in docs/architecture.rst ("Layers"); a name covers the module and its submodules
LAYERS: list[tuple[str, set[str]]] = [
    ("entry points", {"containerbatch.__main__", "containerbatch.cli", "containerbatch.b2luigi"}),
    ("test kit", {"containerbatch.testing"}),
    ("orchestration", {"containerbatch.run", "containerbatch.worker", "containerbatch.batching"}),
    (
        "services",
        {"containerbatch.poller", "containerbatch.docs", "containerbatch.luigisched"},
    ),
    (
        "plugins",
        {
            "containerbatch.schedulers.local",
            "containerbatch.schedulers.slurm",
            "containerbatch.schedulers.lsf",
            "containerbatch.schedulers.htcondor",
            "containerbatch.schedulers.sge",
            "containerbatch.runtimes.host",
            "containerbatch.runtimes.docker",
            "containerbatch.runtimes.apptainer",
        },
    ),
    (
        "contract",
        {
            "containerbatch.schedulers",  # the package: re-exports base
            "containerbatch.schedulers.base",
            "containerbatch.runtimes",
            "containerbatch.runtimes.base",
            "containerbatch.helpers",
            "containerbatch.resubmit",
            "containerbatch.jobscript",
            "containerbatch.staging",
            "containerbatch.images",
            "containerbatch.bundle",
            "containerbatch.journal",
        },
    ),
    (
        "foundation",
        {
            "containerbatch",  # the package itself: imports errors, settings, states
            "containerbatch.plugins",
            "containerbatch.settings",
            "containerbatch.spec",
            "containerbatch.states",
            "containerbatch.jobfiles",
            "containerbatch.errors",
            "containerbatch.runlog",  # standard library only: images marks its conversions with activity()
            "containerbatch.runner",
        },
    ),
]

#: imports that point upward on purpose, each with its reason
ALLOWED_UPWARD = {
    ("containerbatch.plugins", "containerbatch.schedulers.base"): "the registry checks what it loads against the base",
    ("containerbatch.plugins", "containerbatch.runtimes.base"): "the registry checks what it loads against the base",
}

#: what a scheduler or runtime plugin may import from containerbatch
PUBLIC_CONTRACT = {
    "containerbatch",
    "containerbatch.errors",
    "containerbatch.helpers",
    "containerbatch.resubmit",
    "containerbatch.schedulers.base",
    "containerbatch.runtimes.base",
    "containerbatch.settings",
    "containerbatch.spec",
    "containerbatch.states",
    "containerbatch.testing",
    "containerbatch.testing.contract",
    "containerbatch.testing.fakes",
}


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str) -> set[str]:
    """Every containerbatch module ``path`` imports (module level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                module = ".".join([*anchor, module] if module else anchor)
            found.add(module)
            for alias in node.names:  # `from containerbatch import helpers` imports the module helpers
                candidate = f"{module}.{alias.name}"
                if (ROOT / (candidate.replace(".", "/") + ".py")).exists() or (
                    ROOT / candidate.replace(".", "/") / "__init__.py"
                ).exists():
                    found.add(candidate)
    return found


def own_modules() -> dict[str, Path]:
    return {module_name(p, ROOT): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching name, layer index)
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "containerbatch" and module.startswith(name + ".")):
                if best is None or len(name) > best[0]:
                    best = (len(name), index)
    return None if best is None else best[1]


def test_every_module_has_a_layer():
    missing = [m for m in own_modules() if layer_of(m) is None]
    assert not missing, f"place these modules in a layer of tests/test_layers.py and docs/architecture.rst: {missing}"


def test_layers_point_downward():
    violations = []
    for module, path in own_modules().items():
        mine = layer_of(module)
        assert mine is not None
        for target in imports(path, module):
            if not target.startswith("containerbatch") or target == module:
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs < mine and (module, target) not in ALLOWED_UPWARD:
                violations.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not violations, "imports pointing upward:\n" + "\n".join(violations)


def test_the_contract_test_can_fail(tmp_path):
    """The checker sees an upward import, also one inside a function."""
    bad = tmp_path / "containerbatch" / "spec.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from containerbatch import worker\n")
    assert "containerbatch.worker" in imports(bad, "containerbatch.spec")
    assert layer_of("containerbatch.worker") < layer_of("containerbatch.spec")


def test_builtin_plugins_do_not_import_each_other():
    plugin_modules = sorted(LAYERS[4][1])
    for module in plugin_modules:
        path = own_modules()[module]
        others = {m for m in plugin_modules if m != module} & imports(path, module)
        assert not others, f"{module} imports {others}"


@pytest.mark.parametrize(
    "path",
    [
        PACKAGE / "schedulers" / "sge.py",
        ROOT / "tests" / "plugins" / "example" / "containerbatch_toyq" / "__init__.py",
        ROOT / "tests" / "plugins" / "example" / "containerbatch_toyq" / "fake.py",
    ],
    ids=lambda p: p.name if p.name != "__init__.py" else "toyq",
)
def test_plugins_use_only_the_public_contract(path: Path):
    used = {m for m in imports(path, "plugin") if m.startswith("containerbatch")}
    assert used <= PUBLIC_CONTRACT, f"{path} imports {sorted(used - PUBLIC_CONTRACT)} beyond the public contract"


def test_runner_imports_only_the_standard_library_and_luigi():
    path = PACKAGE / "runner.py"
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    assert names - set(sys.stdlib_module_names) - {"__future__"} <= {"luigi"}, names


#: modules that import each other on purpose, each with its reason; any other pair is a circle to cut
ALLOWED_MUTUAL = {
    ("containerbatch", "containerbatch.settings"): "the package re-exports get/set_setting; settings loads plugins "
    "(from containerbatch import plugins) inside a function",
    ("containerbatch.plugins", "containerbatch.settings"): "settings asks the registry for plugin-declared settings "
    "the first time a name is unknown; the registry checks SETTINGS against settings.Setting",
    ("containerbatch.batching", "containerbatch.run"): "the run owns its Batcher; batching names Run only for types",
}


def test_no_two_modules_import_each_other():
    """Cycles of two (run and worker were one: the run now reads only its AttemptRecords)."""
    modules = own_modules()
    graph = {m: {t for t in imports(p, m) if t in modules and t != m} for m, p in modules.items()}
    pairs = {tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph[b]}
    unexpected = sorted(pairs - set(ALLOWED_MUTUAL))
    assert not unexpected, f"modules importing each other: {unexpected}"
    assert "containerbatch.worker" not in graph["containerbatch.run"]
