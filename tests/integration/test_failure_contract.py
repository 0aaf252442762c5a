"""The failure contract at the writers' seams (README "Exit codes"): a write the machine
refuses is exit 1 with one line naming the path and what to do, leaves no temporary file and
never a stale model passed off as written; an OSError no seam words is still exit 1, not 70.
SIGTERM at any moment of ``python -m streamgd fit`` ends in 75 (0 once the model is written).
And the cases of ``tools/fault_injection.py``, which make the failures happen (a full or
read-only tmpfs, a directory root may not write, a file-size limit, held locks, damaged
checkpoints, leftovers of a killed write) and print them as README "Failure behaviour"'s table.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
from integration_support import REPO_ROOT, run_cli, write_synthetic

import streamgd
from streamgd.archive import read_archive_digest
from streamgd.model import MODEL_VERSION, Model
from streamgd.training.checkpoint import MODEL_DIGEST_KEY, CheckpointManager


# -- in-process, at the writer's seam ---------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(str(tmp_path_factory.mktemp("fc")), rows=1200, features=3, seed=5)


def _fit(data, *extra):
    return ["fit", *data.paths, "--target", "y", "--features", "x0,x1,x2", "--epochs", "2",
            *map(str, extra)]


def test_model_write_failing_after_training_is_rewritten_by_resume(data, tmp_path, capsys,
                                                                    monkeypatch):
    """The model write fails after training (here: no space, at Model.save's seam): exit 1,
    one line, the old model kept. ``--resume`` of the finished run then finds that the file
    is not the model its checkpoint recorded, writes it, and only then says it did."""
    model, ckpt = tmp_path / "m.npz", tmp_path / "m.ckpt"
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                         "--epochs", "1"))
    assert code == 0, err
    old = model.read_bytes()

    real_save = Model.save

    def no_space(self, path, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Model, "save", no_space)
    code, out, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt, "-q"))
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err and "No space left" in err
    assert model.read_bytes() == old
    monkeypatch.setattr(Model, "save", real_save)

    code, out, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                           "--resume"))
    assert code == 0, err
    assert "writing the final model" in err and "again" in err
    assert err.index("again") < err.index("model written")
    assert model.read_bytes() != old
    manager = CheckpointManager(str(ckpt))
    path, state = manager.latest()
    assert state.finished and manager.recorded_model_digest is not None
    found = read_archive_digest(str(model), kind="model", max_version=MODEL_VERSION)[2]
    assert found == manager.recorded_model_digest

    # a third run: the model is that run's, nothing is written
    before = model.stat().st_mtime_ns
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                         "--resume"))
    assert code == 0 and "again" not in err
    assert model.stat().st_mtime_ns == before


def test_resume_of_a_finished_run_restores_its_history_files(data, tmp_path, capsys):
    """The history beside the model is checked too: a missing or altered file is written
    again, an intact one (and the model) left as it is."""
    model, ckpt = tmp_path / "m.npz", tmp_path / "m.ckpt"
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt))
    assert code == 0, err
    csv_path, json_path = tmp_path / "m.history.csv", tmp_path / "m.history.json"
    good_csv, good_json = csv_path.read_bytes(), json_path.read_bytes()
    stamps = model.stat().st_mtime_ns, json_path.stat().st_mtime_ns
    csv_path.unlink()
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                         "--resume"))
    assert code == 0, err
    # the same rows (a checkpoint keeps an entry's keys sorted: the columns may be in another order)
    assert _csv_rows(csv_path.read_bytes()) == _csv_rows(good_csv)
    assert json_path.read_bytes() == good_json
    assert (model.stat().st_mtime_ns, json_path.stat().st_mtime_ns) == stamps
    json_path.write_text("[]")
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                         "--resume"))
    assert code == 0 and json.loads(json_path.read_bytes()) == json.loads(good_json)


def _csv_rows(blob: bytes) -> list[dict]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(blob.decode())))


def test_the_finished_checkpoint_records_the_models_digest(data, tmp_path, capsys):
    model, ckpt = tmp_path / "m.npz", tmp_path / "m.ckpt"
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt))
    assert code == 0, err
    newest = sorted(ckpt.glob("ckpt-*.npz"))[-1]
    meta = streamgd.archive.read_archive(str(newest), kind="checkpoint", max_version=9)[0]
    assert meta[MODEL_DIGEST_KEY] == streamgd.load(str(model)).digest()


def test_an_oserror_no_seam_words_is_exit_1_naming_the_path(data, tmp_path, capsys,
                                                             monkeypatch):
    """The safety net: an OSError escaping anywhere is the environment (exit 1, one line
    with its path), not a bug (70)."""
    from streamgd.training import api

    def vanished(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone/part-0.parquet")

    monkeypatch.setattr(api, "open_dataset", vanished)
    code, _, err = run_cli(capsys, *_fit(data, "-o", tmp_path / "m.npz"))
    assert code == 1
    assert err.count("\n") == 1 and "/gone/part-0.parquet" in err and "Traceback" not in err


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    from streamgd.archive import atomic_write
    from streamgd.errors import WriteError

    target = tmp_path / "x.json"
    target.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError, match=r"no space left.*free space on the device holding"):
        atomic_write(str(target), fail, what="the metrics file", option="--metrics-out")
    assert os.listdir(tmp_path) == ["x.json"] and target.read_text() == "old"


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "fault_injection", REPO_ROOT / "tools" / "fault_injection.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_injection"] = module
    spec.loader.exec_module(module)
    return module


faults = _load_tool()

# -- signals outside the training loop -----------------------------------------------------
def test_import_streamgd_imports_no_heavy_library():
    """So that the console entry point installs its signal handlers before those imports."""
    code = (
        "import sys, streamgd, streamgd.cli, streamgd.cli.signals\n"
        "heavy = [m for m in ('numpy', 'pandas', 'pyarrow', 'dask', 'click') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(streamgd.fit) and streamgd.StreamgdError\n"
        "from streamgd.cli import cli, main, run\n"
        "assert callable(main) and callable(run) and cli.name == 'cli'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _sigterm_when(args, event_name, tmp_path):
    """``python -m streamgd ARGS --log-format json``, SIGTERM once the JSON event
    ``event_name`` appears (None: as soon as its handlers are installed, which the entry
    point does first: then the imports, about a second, are still running)."""
    with subprocess.Popen(
        [sys.executable, "-m", "streamgd", *map(str, args), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    ) as proc:
        if event_name is None:
            assert faults.catches_sigterm(proc.pid)
            proc.send_signal(signal.SIGTERM)
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if event_name is not None and json.loads(line)["event"] == event_name:
                proc.send_signal(signal.SIGTERM)
                event_name = None
        proc.stdout.read()
    return proc.wait(timeout=60), [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("moment", "code"), [(None, 75), ("start", 75), ("epoch", 75), ("finish", 0)]
)
def test_sigterm_at_any_moment(data, tmp_path_factory, tmp_path, moment, code):
    """During the imports or the statistics pass: exit 75, nothing written; during training:
    a checkpoint, 75; after the model was written: 0."""
    model, ckpt = tmp_path / "m.npz", tmp_path / "m.ckpt"
    if moment == "start":  # a statistics pass long enough (~1 s) to be caught in
        data = write_synthetic(str(tmp_path / "big"), rows=1_500_000, features=3, files=4)
    args = _fit(data, "-o", model, "--checkpoint-dir", ckpt, "--epochs", "3")
    got, events = _sigterm_when(args, moment, tmp_path)
    assert got == code, events
    written = sorted(p.name for p in ckpt.glob("ckpt-*.npz")) if ckpt.exists() else []
    if moment in (None, "start"):
        assert events[-1]["event"] == "error" and events[-1]["exit_code"] == 75
        assert "nothing was changed on disk" in events[-1]["message"]
        assert not model.exists() and written == []
    elif moment == "epoch":
        assert not model.exists() and written
    else:
        assert model.exists() and events[-1]["event"] == "finish"


# -- the fault-injection cases (tools/fault_injection.py), from outside ----------------------
# the signal cases are test_sigterm_at_any_moment above
OS_CASES = [name for name in faults.CASES if not name.startswith("SIGTERM")]


@pytest.mark.parametrize("name", OS_CASES)
def test_failure_case(name, tmp_path):
    """A real fault (tmpfs full or read-only, capabilities dropped, RLIMIT_FSIZE, a held lock,
    a damaged checkpoint, ...): the exit code, one line without a traceback, the earlier model
    and checkpoints byte for byte, no temporary file left, and the next run succeeds."""
    outcome = faults.run_case(name, tmp_path)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.code == outcome.expected, outcome
    assert "Traceback" not in outcome.message
    assert outcome.one_line, outcome
    assert outcome.untouched, outcome
    assert outcome.leftovers == [], outcome
    assert outcome.next_ok, outcome


def test_the_table_has_a_row_per_case():
    table = faults.table([faults.Outcome(name, 1, code=1) for name in faults.CASES])
    assert table.count("\n") == len(faults.CASES) + 1
