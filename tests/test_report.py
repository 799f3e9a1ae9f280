"""``containerbatch report``: the HTML timeline, rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from containerbatch.cli import app
from containerbatch.cli.report import render_html
from containerbatch.journal import AttemptRow, Journal
from tests.conftest import IN_CI, ROOT, run_cli

EXAMPLE = str(ROOT / "examples" / "workflow.py")

FLOW = """
import time

import luigi


class Nap(luigi.Task):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/nap_{self.n}.txt")

    def run(self):
        time.sleep(0.3 * self.n)
        with self.output().open("w") as handle:
            handle.write("ok")


class Broken(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/broken.txt")

    def run(self):
        raise RuntimeError("broken on purpose")


class All(luigi.WrapperTask):
    def requires(self):
        return [Nap(n=1), Nap(n=2), Nap(n=3), Broken()]
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        message = "chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=1300,800",
                *args,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def dump_dom(page: Path) -> str:
    proc = browse(page, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def journal_rows(folder: Path) -> list[AttemptRow]:
    journal = Journal(folder / ".containerbatch" / "journal.sqlite")
    try:
        return journal.attempts()
    finally:
        journal.close()


def drawn(dom: str) -> list[dict[str, str]]:
    """Every <g class="attempt" …> the script drew, as its attributes."""
    groups = re.findall(r"<g ([^>]*\bclass=\"attempt\"[^>]*)>", dom)
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', attrs)) for attrs in groups]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    (folder / "flow.py").write_text(FLOW)
    proc = run_cli(["run", "flow.py", "All", "--runtime", "host", "--workers", "4"], cwd=folder)
    assert proc.returncode == 1, proc.stderr[-3000:]
    return folder


def make_report(folder: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, Path]:
    monkeypatch.chdir(folder)
    page = folder / "report.html"
    result = CliRunner().invoke(app, ["report", "-o", str(page), *args], env={"COLUMNS": "200"})
    return result.exit_code, page


def test_every_attempt_is_drawn(mixed_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, page = make_report(mixed_run, monkeypatch)
    assert code == 1  # Broken failed
    html = page.read_text()
    assert 'class="attempt"' not in html  # the bars come from the script, not the server
    rows = journal_rows(mixed_run)
    groups = drawn(dump_dom(page))
    assert len(groups) == len(rows) == 4
    assert sorted((g["data-task"], g["data-state"]) for g in groups) == sorted((r.task_id, r.state) for r in rows)


def test_bars_follow_the_journal_times(mixed_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, page = make_report(mixed_run, monkeypatch)
    dom = dump_dom(page)
    assert 'data-drawn="4"' in dom
    widths = {}
    for match in re.finditer(r'<g ([^>]*class="attempt"[^>]*)>(.*?)</g>', dom, re.S):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
        ran = re.search(r'<rect class="ran[^"]*" ([^>]*)>', match.group(2))
        assert ran is not None, attrs
        widths[attrs["data-task"]] = float(dict(re.findall(r'([\w-]+)="([^"]*)"', ran.group(1)))["width"])
    rows = {r.task_id: r for r in journal_rows(mixed_run)}
    naps = sorted((t for t in rows if t.startswith("Nap")), key=lambda t: rows[t].params["n"])
    # Nap n sleeps 0.3 n seconds: the bars grow with n, in proportion to the journal's started→ended
    assert widths[naps[0]] < widths[naps[1]] < widths[naps[2]]
    spans = [rows[t].ended - rows[t].started for t in naps]
    assert widths[naps[2]] / widths[naps[0]] == pytest.approx(spans[2] / spans[0], rel=0.1)


def test_report_is_self_contained(mixed_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, page = make_report(mixed_run, monkeypatch)
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, kind = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, kind, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and kind in (2, 6) and interlace == 0
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if kind == 6 else 3
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind_byte, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind_byte == 1:
                line[i] = (line[i] + a) & 255
            elif kind_byte == 2:
                line[i] = (line[i] + b) & 255
            elif kind_byte == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind_byte == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def colour_count(path: Path, hex_colour: str) -> int:
    """How many pixels of the screenshot have exactly ``hex_colour``."""
    width, _height, rows = png_pixels(path)
    want = bytes.fromhex(hex_colour.lstrip("#"))
    bpp = len(rows[0]) // width
    return sum(1 for row in rows for i in range(0, len(row), bpp) if row[i : i + 3] == want)


def test_screenshot_shows_the_timeline(mixed_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a person sees in Chromium: the done bars, the failed bar and the failed attempt's section (red)."""
    from containerbatch.cli.report import COLORS

    _, page = make_report(mixed_run, monkeypatch)
    shot = tmp_path / "report.png"
    proc = browse(page, f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.stat().st_size > 10_000
    done, failed = colour_count(shot, COLORS["done"]), colour_count(shot, COLORS["failed"])
    assert done > 3 * 200  # three done bars, each well over 200 pixels
    assert failed > 200  # the failed bar, the legend and the border of the failure's section
    keep = os.environ.get("CB_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_example_workflow_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = run_cli(["run", EXAMPLE, "Summary", "--samples", "2", "--runtime", "host", "--workers", "2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "-o", "r.html", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["attempts"] == 5 and Path(data["path"]) == tmp_path / "r.html"
    groups = drawn(dump_dom(tmp_path / "r.html"))
    assert len(groups) == 5 and {g["data-state"] for g in groups} == {"done"}


def test_hostile_text_stays_data() -> None:
    evil = "</script><script>document.title='pwned'</script>"
    rows = [
        AttemptRow(
            run_id="r1",
            task_id=f"T_{i}",
            task_family="T",
            params={"x": evil},
            attempt=1,
            scheduler="slurm" if i % 2 else "local",
            runtime="host",
            image=None,
            job_id=str(i),
            job_dir="/x",
            marker_path="/x/m",
            state="failed" if i == 2 else "done",
            reason=evil,
            exit_code=0,
            submitted=100.0 + i,
            started=101.0 + i,
            ended=103.0 + i,
            updated=104.0,
        )
        for i in range(3)
    ]
    html = render_html({"run_id": "r1", "started": 100.0, "ended": 110.0, "host": "h", "pid": 1}, rows, now=120.0)
    assert evil not in html
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "r.html"
        page.write_text(html)
        dom = dump_dom(page)
    assert "pwned" not in dom.split("<body")[0]
    groups = drawn(dom)
    assert len(groups) == 3
    assert dom.count('data-scheduler="slurm"') == 1 and dom.count('data-scheduler="local"') == 1


def test_family_statistics_and_failures_on_the_page(mixed_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, page = make_report(mixed_run, monkeypatch)
    dom = dump_dom(page)
    rows = journal_rows(mixed_run)
    stats = re.search(r'<table id="family-stats">(.*?)</table>', dom, re.S)
    assert stats is not None
    cells = {
        m.group(1): re.findall(r"<td[^>]*>(.*?)</td>", m.group(2))
        for m in re.finditer(r'<tr data-family="(\w+)">(.*?)</tr>', stats.group(1), re.S)
    }
    assert set(cells) == {"Nap", "Broken", "All"} or set(cells) == {"Nap", "Broken"}
    nap = cells["Nap"]
    assert nap[:5] == ["Nap", "3", "3", "3", "0"]  # family, tasks, attempts, done, failed
    spans = sorted(r.ended - r.started for r in rows if r.task_family == "Nap")
    from containerbatch.cli.display import fmt_elapsed

    assert nap[5] == fmt_elapsed(spans[1]) and nap[6] == fmt_elapsed(spans[2])  # median and max run time
    assert cells["Broken"][4] == "1" and cells["Broken"][-1] == "task_error 1"
    # the failed attempt: its exception text and the last lines of its log
    section = re.search(r'<section class="failure" data-task="(Broken_[^"]+)"[^>]*>(.*?)</section>', dom, re.S)
    assert section is not None
    assert "RuntimeError('broken on purpose')" in section.group(2)
    assert "RuntimeError: broken on purpose" in re.search(r'<pre class="tail">(.*?)</pre>', section.group(2), re.S)[1]
    assert f"logs/Broken/{section.group(1)}/attempt-1/stderr" in section.group(2)


def test_report_of_a_refused_submission_shows_the_schedulers_words(tmp_path: Path) -> None:
    words = "sbatch: error: Invalid partition name specified"
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "submit.log").write_text(f"message: refused\n--- stdout --- (empty)\n--- stderr ---\n{words}\n")
    row = AttemptRow(
        run_id="r1",
        task_id="T_1",
        task_family="T",
        params={},
        attempt=1,
        scheduler="slurm",
        runtime="host",
        image=None,
        job_id=None,
        job_dir=str(folder),
        marker_path="/x/m",
        state="failed",
        reason="submit_error",
        exit_code=None,
        submitted=100.0,
        started=None,
        ended=100.5,
        updated=100.5,
    )
    html = render_html({"run_id": "r1", "started": 100.0, "ended": 101.0, "host": "h", "pid": 1}, [row], now=120.0)
    section = re.search(r'<section class="failure" data-task="T_1"[^>]*>(.*?)</section>', html, re.S)
    assert section is not None and "never got a job id" in section.group(1)
    assert f'the scheduler said:</div><pre class="exception">{words}</pre>' in section.group(1)
