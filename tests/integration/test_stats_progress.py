"""The statistics pass reports its progress: to the callbacks (``on_stats_progress``), as a
bar on a terminal, and as ``statistics`` events in the JSON log; and only a few times a second
whatever the data. A bar is erased before an error's message."""

from __future__ import annotations

import io
import json

import pytest
from integration_support import run_cli, write_synthetic

import streamgd
import streamgd.stats_pass
from streamgd.training.callbacks import Callback, JsonLogger, ProgressReporter


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None, bool]] = []
        self.began_training_after_stats = False

    def on_stats_progress(self, rows: int, total: int | None, done: bool) -> None:
        self.calls.append((rows, total, done))

    def on_train_begin(self, state, dataset) -> None:
        self.began_training_after_stats = bool(self.calls) and self.calls[-1][2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 40 row groups of 300 rows in 4 files
    directory = str(tmp_path_factory.mktemp("stats"))
    return write_synthetic(directory, rows=12_000, features=3, files=4, row_group_size=300)


def fit(data, callbacks, **settings):
    settings = {"features": ["x0", "x1", "x2"], "epochs": 1, **settings}
    return streamgd.fit(data.paths, target="y", callbacks=callbacks, quiet=True, **settings)


def test_every_piece_reported_when_the_interval_is_zero(data, monkeypatch):
    monkeypatch.setattr(streamgd.stats_pass, "PROGRESS_INTERVAL", 0.0)
    recorder = Recorder()
    fit(data, [recorder])
    calls = recorder.calls
    assert calls[0] == (0, 12_000, False)
    assert calls[-1] == (12_000, 12_000, True)  # every row: fewer than --stats-rows
    rows = [r for r, _, _ in calls]
    assert rows == sorted(rows) and len(calls) >= 40  # a call per row group, and the ends
    assert [done for _, _, done in calls].count(True) == 1
    assert recorder.began_training_after_stats


def test_a_sample_reports_its_own_size(data, monkeypatch):
    monkeypatch.setattr(streamgd.stats_pass, "PROGRESS_INTERVAL", 0.0)
    recorder = Recorder()
    fit(data, [recorder], stats_rows=1000)
    rows, total, done = recorder.calls[-1]
    assert total == 1000 and done and rows >= 1000  # whole row groups: 4 x 300 rows
    assert rows == 1200


def test_calls_are_throttled(data, monkeypatch):
    clock = iter(range(10**6))  # each read of the pass's clock: 0.1 s later
    monkeypatch.setattr(streamgd.stats_pass, "monotonic", lambda: next(clock) / 10)
    recorder = Recorder()
    fit(data, [recorder])  # 40 pieces, 0.1 "s" apart: a call every third piece
    middle = recorder.calls[1:-1]
    assert 5 <= len(middle) <= 20
    assert recorder.calls[-1][2] and not any(done for _, _, done in middle)


def test_no_pass_no_calls_on_warm_start(data, tmp_path):
    model = fit(data, [])
    path = str(tmp_path / "m.npz")
    model.save(path)
    recorder = Recorder()
    fit(data, [recorder], init=path)
    assert recorder.calls == []


def test_json_log_has_a_statistics_event_before_the_first_epoch(data, capsys):
    args = ["fit", *data.paths, "--target", "y", "-f", "x0,x1,x2", "--epochs", "1"]
    code, _, err = run_cli(capsys, *args, "--log-format", "json")
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.index("statistics") < kinds.index("epoch")
    last = [e for e in events if e["event"] == "statistics"][-1]
    assert last["done"] is True and last["rows"] == last["total"] == 12_000
    assert last["seconds"] >= 0


def test_json_logger_emits_about_once_a_second():
    stream = io.StringIO()
    logger = JsonLogger(stream=stream)
    logger.on_stats_progress(0, 100, False)  # the pass begins: nothing said yet
    for rows in range(1, 50):
        logger.on_stats_progress(rows, 100, False)  # all within a second
    logger.on_stats_progress(100, 100, True)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["rows"], e["done"]) for e in events] == [("statistics", 100, True)]


def test_terminal_bar_shows_the_statistics_pass(data):
    stream = io.StringIO()
    reporter = ProgressReporter(stream=stream, bar=True)
    fit(data, [reporter])
    text = stream.getvalue()
    assert "statistics" in text and "epoch 1/1" in text
    assert text.index("statistics") < text.index("epoch 1/1")


class FailAt(Callback):
    """Raises ``error`` when training reaches batch ``step`` (an error mid-epoch)."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_batch_end(self, state, rows, loss_sum) -> None:
        if state.step >= self.step:
            raise self.error


@pytest.mark.parametrize("error", [streamgd.errors.DataError("bad row"), KeyboardInterrupt()])
def test_an_error_mid_epoch_closes_the_bar_before_its_message(data, error):
    stream = io.StringIO()
    reporter = ProgressReporter(stream=stream, bar=True)
    with pytest.raises(type(error)):
        fit(data, [reporter, FailAt(5, error)], batch_size=64)
    text = stream.getvalue()
    assert "epoch 1/1" in text  # the bar was drawn, then erased (tqdm's close of a bar that
    assert text.endswith("\r")  # does not stay ends with a return): the message starts a line
