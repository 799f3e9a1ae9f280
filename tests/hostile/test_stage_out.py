"""A staged job's output archive (HTCondor ``transfer_files``) crafted by hand, as a hostile node would.

Only the task's declared outputs and its own job folder may come back. The attacker's archive names the
workflow file, the runner bundle, the journal, another task's result and done-marker, files reached
through a symbolic link that exists in the working directory (``data -> elsewhere``), ``..`` paths,
links and devices. Checked from outside: nothing but the allowed files changed (every file hashed before
and after), and every refused member is listed in the attempt's log folder.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from containerbatch import staging
from containerbatch.jobscript import STAGE_OUT
from tests.hostile.conftest import tree
from tests.test_staging import make_spec


def _rel(path: Path | str) -> str:
    return str(path).lstrip("/")


def _craft(archive: Path, files: dict[str, bytes], special: dict[str, tuple[bytes, str]]) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o4777  # setuid and world-writable: never kept
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in special.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)


def test_a_crafted_archive_writes_only_declared_outputs_and_the_job_folder(tmp_path: Path) -> None:
    work = tmp_path / "w"
    spec = make_spec(work)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("outside every allowed folder")
    (work / "data").symlink_to(elsewhere)  # the user's own link in the working directory
    (work / "wf.py").write_text("# the workflow\n")
    bundle = Path(spec.bundle_dir or "")
    bundle.mkdir(parents=True)
    (bundle / "runner.py").write_text("# the runner bundle\n")
    state = Path(spec.state_dir)
    (state / "journal.sqlite").write_text("journal")
    other = work / "logs" / "Other" / "Other_b" / "attempt-1"
    other.mkdir(parents=True)
    (other / "result.json").write_text('{"status": "failure"}')
    marker = state / "runs" / spec.run_id / "done" / "Other_b.1"
    marker.parent.mkdir(parents=True)
    marker.write_text("1\n")
    results = Path(spec.result_dir)
    results.mkdir()
    (results / "other-task.txt").write_text("another task's output")
    declared = results / "fit_a.txt"
    declared_dir = results / "fit_a.d"
    before = tree(tmp_path, skip=(Path(spec.job_dir),))

    attack = {
        _rel(declared): b"the output",
        _rel(declared_dir / "part-0"): b"inside a declared folder",
        _rel(Path(spec.job_dir) / "result.json"): b'{"status": "success"}',
        _rel(work / "wf.py"): b"import os; os.system('id')",
        _rel(bundle / "runner.py"): b"evil runner",
        _rel(state / "journal.sqlite"): b"forged journal",
        _rel(other / "result.json"): b'{"status": "success"}',
        _rel(marker): b"0\n",
        _rel(results / "other-task.txt"): b"overwritten",
        _rel(work / "data" / "keep.txt"): b"written through the user's link",
        _rel(work / "data" / "new.txt"): b"planted through the user's link",
        _rel(work / "new-module.py"): b"planted module",
        _rel(results) + "/../wf.py": b"dot-dot",
        "/" + _rel(work / "abs.txt"): b"absolute",
    }
    special = {
        _rel(results / "link"): (tarfile.SYMTYPE, "/etc/passwd"),
        _rel(results / "hard"): (tarfile.LNKTYPE, _rel(work / "wf.py")),
        _rel(results / "dev"): (tarfile.CHRTYPE, ""),
        _rel(results / "fifo"): (tarfile.FIFOTYPE, ""),
    }
    _craft(Path(spec.job_dir) / STAGE_OUT, attack, special)

    written = staging.unpack_outputs(spec, outputs=[str(declared), str(declared_dir)])

    assert sorted(written) == sorted([str(declared), str(declared_dir / "part-0"), spec.result_path])
    assert declared.read_bytes() == b"the output"
    assert declared.stat().st_mode & 0o7022 == 0  # no setuid, nothing writable beyond the umask (022)
    after = tree(tmp_path, skip=(Path(spec.job_dir), declared, declared_dir))
    assert after == before  # nothing else on the submit host changed
    refused = (Path(spec.job_dir) / "stage-out-refused.txt").read_text().splitlines()
    assert len(refused) == len(attack) + len(special) - 3, refused


def test_a_declared_output_behind_a_link_that_leads_out_is_refused(tmp_path: Path) -> None:
    """The output's folder is a link the node cannot have made (no shared filesystem), yet a member whose
    real path leaves the allowed set through it is refused; one whose real path is the output is written."""
    work = tmp_path / "w"
    spec = make_spec(work)
    real_results = tmp_path / "real-results"
    real_results.mkdir()
    Path(spec.result_dir).symlink_to(real_results)
    declared = Path(spec.result_dir) / "out.txt"
    _craft(
        Path(spec.job_dir) / STAGE_OUT,
        {_rel(declared): b"ok", _rel(Path(spec.result_dir) / "stray.txt"): b"not declared"},
        {},
    )
    written = staging.unpack_outputs(spec, outputs=[str(declared)])
    assert written == [str(real_results / "out.txt")]
    assert sorted(p.name for p in real_results.iterdir()) == ["out.txt"]
