"""Node-side entry point: ``python3 -m containerbatch.runner JOBDIR``.

Reads ``JOBDIR/task.json``, imports the workflow file by path, rebuilds
exactly one task from its family and parameters, runs it, and writes
``JOBDIR/result.json`` atomically.  Imports only the standard library and
luigi, and runs on Python 3.8 or newer, inside whatever image the task names.

Exit codes: 0 success (or new dynamic dependencies), 1 the task failed,
2 the task could not be rebuilt (workflow file or parameters do not match).

A job of several tasks (``tasks_per_job``) names a group folder whose
``group.json`` lists the tasks' job folders: the interpreter imports luigi
once and forks one child per task (up to ``parallel`` at once), each writing
its own result.json, exit_code and logs, and its done-marker when ``group.json`` names one (the job script
marks the others at its end); the exit code is the worst child's.
"""

import importlib
import importlib.util
import json
import os
import platform
import socket
import sys
import time
import traceback

RESULT = "result.json"
TASK = "task.json"
GROUP = "group.json"


def write_json_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_workflow(info):
    """Import the module that defines the task, under the name it had on the submit host."""
    for folder in reversed(info.get("sys_path", [])):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module_name = info["module"]
    path = info["module_file"]
    if module_name != "__main__":
        try:
            return importlib.import_module(module_name)
        except ImportError:
            pass
    # __main__ on the submit host: load the file under another name so that
    # its `if __name__ == "__main__":` block does not run again here
    name = info.get("load_as") or "containerbatch_workflow"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == path:
        return loaded  # a job of several tasks imported it once, before forking
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError("cannot import the workflow file %s" % path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def apply_context(info, job_dir):
    """Make the node see what the submitting script saw: its command line and its b2luigi settings.

    The workflow is imported here without its ``__main__`` block, so settings set there (and settings files
    the node cannot find) reach b2luigi through ``B2LUIGI_SETTINGS_JSON``, a file b2luigi reads instead of
    its settings.json files.
    """
    if isinstance(info.get("argv"), list) and info["argv"]:
        sys.argv = [str(a) for a in info["argv"]]
    b2settings = info.get("b2luigi_settings")
    if isinstance(b2settings, dict):
        path = os.path.join(job_dir, "b2luigi_settings.json")
        write_json_atomic(path, b2settings)
        os.environ["B2LUIGI_SETTINGS_JSON"] = path
        for name in ("XRootD.client.flags", "webdav3.client"):
            _placeholder_if_missing(name)


class _Unavailable:
    """Stands for a class of a compiled module the image lacks; fails only when used."""

    def __init__(self, name):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise ImportError(
            "%s is not available in this image (b2luigi imports it for remote targets): install it in the image"
            % self._name
        )

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable("%s.%s" % (self._name, attr))


def _placeholder_if_missing(dotted):
    """b2luigi imports XRootD and webdav3 (compiled parts: not in the runner bundle) at import time."""
    import types

    try:
        importlib.import_module(dotted)
        return
    except ImportError:
        pass
    top = dotted.split(".")[0]
    for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
        del sys.modules[key]
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        module = types.ModuleType(name)
        module.__path__ = []
        module.__getattr__ = lambda attr, _n=name: _Unavailable("%s.%s" % (_n, attr))
        sys.modules[name] = module
        if i > 1:
            setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)


def make_output_folders(task):
    """Create the parent folders of the task's local outputs, as b2luigi does before run()."""
    from luigi import LocalTarget
    from luigi.task import flatten

    for target in flatten(task.output()):
        if isinstance(target, LocalTarget):
            parent = os.path.dirname(os.path.abspath(target.path))
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)


def rebuild_task(info):
    load_workflow(info)
    from luigi.task_register import Register

    task = Register.get_task_cls(info["family"]).from_str_params(info["params"])
    if task.task_id != info.get("node_task_id", info["task_id"]):
        raise RuntimeError(
            "rebuilt task %s but the submit host sent %s: the workflow file changed between submission and run"
            % (task.task_id, info["task_id"])
        )
    return task


def _module_name(task, info):
    """Report dynamic dependencies under module names the submit host knows."""
    module = task.task_module
    if module == (info.get("load_as") or "containerbatch_workflow"):
        return info["module"]
    return module


def run_task(task, info):
    """Run like luigi's TaskProcess; returns (status, new_deps, explanation)."""
    from luigi.task import DynamicRequirements, flatten

    missing = [dep.task_id for dep in task.deps() if not dep.complete()]
    if missing:
        raise RuntimeError("unfulfilled dependencies at run time: %s" % ", ".join(missing))
    make_output_folders(task)
    result = task.run()
    if result is None or not hasattr(result, "send"):
        return "success", [], ""
    to_send = None
    while True:
        try:
            requires = next(result) if to_send is None else result.send(to_send)
        except StopIteration:
            return "success", [], ""
        if not isinstance(requires, DynamicRequirements):
            requires = DynamicRequirements(requires)
        if not requires.complete():
            deps = [
                [_module_name(t, info), t.task_family, t.to_str_params()] for t in flatten(requires.flat_requirements)
            ]
            return "new_deps", deps, ""
        to_send = requires.paths


def _run_child(job_dir):
    """In a forked child: this task's logs, then the one-task runner; never returns."""
    code = 2
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(os.path.join(job_dir, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(target, fd)
            os.close(target)
        code = main([job_dir])
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _write_code(job_dir, code):
    tmp = os.path.join(job_dir, "exit_code.tmp")
    with open(tmp, "w") as handle:
        handle.write("%d\n" % code)
    os.replace(tmp, os.path.join(job_dir, "exit_code"))


def _write_marker(path, code):
    """The task's done-marker as soon as it ended (the submit side then sees it before the whole job ends);
    where its folder is not visible here (a container without the state folder), the job script writes it."""
    folder = os.path.dirname(path)
    if not path or not os.path.isdir(folder):
        return
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "w") as handle:
            handle.write("%d\n" % code)
        os.replace(tmp, path)
    except OSError:
        pass  # the job script's mark at the end of the job still comes


def run_group(group_dir):
    """Run every task of a group job; returns the worst exit code."""
    with open(os.path.join(group_dir, GROUP)) as handle:
        group = json.load(handle)
    job_dirs = [str(d) for d in group["job_dirs"]]
    marks = [str(m) for m in group.get("markers", [])]
    markers = {job_dirs[i]: marks[i] for i in range(min(len(job_dirs), len(marks)))}
    parallel = max(1, int(group.get("parallel", 1)))
    import luigi  # noqa: F401  (imported once, before the children fork)

    if job_dirs:  # the workflow too (its imports may be what costs): each child finds it loaded
        try:
            with open(os.path.join(job_dirs[0], TASK)) as handle:
                first = json.load(handle)
            os.chdir(first["working_dir"])
            load_workflow(first)
        except BaseException:  # each child imports it again and reports what goes wrong
            traceback.print_exc()

    running = {}
    worst = 0
    todo = list(job_dirs)
    while todo or running:
        while todo and len(running) < parallel:
            job_dir = todo.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _run_child(job_dir)
            running[pid] = job_dir
        pid, status = os.wait()
        job_dir = running.pop(pid, None)
        if job_dir is None:
            continue
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _write_code(job_dir, code)
        if job_dir in markers:
            _write_marker(markers[job_dir], code)
        sys.stderr.write("containerbatch runner: %s ended with %d\n" % (job_dir, code))
        worst = max(worst, code)
    return worst


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python3 -m containerbatch.runner JOBDIR\n")
        return 2
    job_dir = argv[0]
    if os.path.exists(os.path.join(job_dir, GROUP)):
        return run_group(job_dir)
    with open(os.path.join(job_dir, TASK)) as handle:
        info = json.load(handle)
    started = time.time()
    result = {
        "task_id": info["task_id"],
        "attempt": info.get("attempt", 1),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "pid": os.getpid(),
        "uid": os.getuid(),
        "started": started,
    }
    if isinstance(info.get("umask"), int):
        os.umask(info["umask"] & 0o777)  # files the task makes follow the submitting user's umask
    os.chdir(info["working_dir"])
    exit_code = 0
    try:
        os.environ["CONTAINERBATCH_JOB_DIR"] = job_dir  # sys.argv becomes the submitter's command line
        apply_context(info, job_dir)
        task = rebuild_task(info)
    except BaseException as exc:  # report everything, including SystemExit from the workflow
        traceback.print_exc()
        sys.stderr.write("containerbatch runner: could not rebuild the task from %s\n" % os.path.join(job_dir, TASK))
        result.update(status="error", exception=repr(exc), traceback=traceback.format_exc(), new_deps=[])
        exit_code = 2
    else:
        sys.stderr.write("containerbatch runner: running %s on %s\n" % (task.task_id, result["host"]))
        try:
            status, new_deps, explanation = run_task(task, info)
            result.update(status=status, new_deps=new_deps, explanation=explanation)
        except BaseException as exc:
            traceback.print_exc()
            result.update(status="failure", exception=repr(exc), traceback=traceback.format_exc(), new_deps=[])
            exit_code = 1
    result["finished"] = time.time()
    write_json_atomic(os.path.join(job_dir, RESULT), result)
    sys.stderr.flush()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
