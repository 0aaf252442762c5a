"""The archive container: round trip, verification, no pickle, atomic writes."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest

from streamgd.archive import atomic_path, atomic_write, read_archive, write_archive
from streamgd.errors import CheckpointError

ARRAYS = {
    "w": np.arange(12.0).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "count": np.array(7, dtype=np.int64),
    "mask": np.array([True, False, True]),
    "small": np.array([1.5, -2.25], dtype=np.float32),
    "bytes": np.frombuffer(b"\x00\xffabc", dtype=np.uint8),
    "empty": np.empty((0, 3)),
}
META = {"names": ["a", "b"], "lr": np.float64(0.5), "steps": np.int64(12), "v": np.array([1, 2])}


def _write(path, **kw):
    args = {"kind": "model", "version": 2, "meta": META, "arrays": ARRAYS}
    args.update(kw)
    write_archive(str(path), **args)
    return str(path)


def _read(path, **kw):
    args = {"kind": "model", "max_version": 2}
    args.update(kw)
    return read_archive(str(path), **args)


def _assert_arrays_equal(got, expected=ARRAYS):
    assert set(got) == set(expected)
    for name, a in expected.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        assert np.array_equal(got[name], a)


def test_round_trip(tmp_path):
    path = _write(tmp_path / "m.npz")
    meta, arrays = _read(path)
    _assert_arrays_equal(arrays)
    assert meta["names"] == ["a", "b"] and meta["lr"] == 0.5 and meta["steps"] == 12
    assert meta["v"] == [1, 2]
    assert meta["kind"] == "model" and meta["version"] == 2
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temporary file left


def test_kind_and_version_are_checked(tmp_path):
    path = _write(tmp_path / "m.npz")
    assert _read(path, kind=("checkpoint", "model"))[0]["kind"] == "model"
    with pytest.raises(CheckpointError, match="checkpoint"):
        _read(path, kind="checkpoint")
    with pytest.raises(CheckpointError, match="newer"):
        _read(path, max_version=1)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError):
        _read(tmp_path / "nope.npz")


def test_write_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError):
        _write(tmp_path / "m.npz", arrays={"o": np.array([{"a": 1}], dtype=object)})
    assert not os.listdir(tmp_path)


def _zip_layout(path):
    """Byte ranges of the members (local headers + data) and of the central directory."""
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        starts = sorted(i.header_offset for i in infos)
        central = z.start_dir
    return starts, central


SMALL = {"w": ARRAYS["w"], "count": ARRAYS["count"]}  # keeps the byte-by-byte tests quick


def _flip_each(path, positions):
    with open(path, "rb") as fh:
        original = fh.read()
    outcomes = []
    for i in positions:
        data = bytearray(original)
        data[i] ^= 0xFF
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            _, arrays = _read(path)
        except CheckpointError:
            outcomes.append((i, "rejected"))
        except Exception as exc:  # noqa: BLE001 - the point is what escapes
            outcomes.append((i, repr(exc)))
        else:
            _assert_arrays_equal(arrays, SMALL)  # a flip in a field nothing reads: data intact
            outcomes.append((i, "intact"))
    with open(path, "wb") as fh:
        fh.write(original)
    return outcomes


def test_any_flipped_byte_in_the_members_is_rejected_or_harmless(tmp_path):
    """Every byte of every member (headers, .npy headers, data, metadata, checksum)."""
    path = _write(tmp_path / "m.npz", arrays=SMALL)
    _, central = _zip_layout(path)
    outcomes = _flip_each(path, range(central))
    escaped = [o for o in outcomes if o[1] not in ("rejected", "intact")]
    assert not escaped
    assert sum(o[1] == "rejected" for o in outcomes) > central // 2


def test_any_flipped_byte_in_the_zip_directory_is_rejected_or_harmless(tmp_path):
    path = _write(tmp_path / "m.npz", arrays=SMALL)
    _, central = _zip_layout(path)
    outcomes = _flip_each(path, range(central, os.path.getsize(path)))
    escaped = [o for o in outcomes if o[1] not in ("rejected", "intact")]
    assert not escaped, escaped[:5]


def test_a_tampered_array_with_valid_zip_crcs_fails_the_checksum(tmp_path):
    path = _write(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    members["w"] = members["w"] + 1e-9
    np.savez(path, **members)  # a well-formed zip: only the SHA-256 can tell
    with pytest.raises(CheckpointError, match="checksum"):
        _read(path)


@pytest.mark.parametrize("keep", [0, 1, 30, 0.5, -22, -1])
def test_truncated_file_is_rejected(tmp_path, keep):
    path = _write(tmp_path / "m.npz")
    with open(path, "rb") as fh:
        data = fh.read()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    with open(path, "wb") as fh:
        fh.write(data[:cut])
    with pytest.raises(CheckpointError):
        _read(path)


def test_foreign_files_are_rejected(tmp_path):
    plain = str(tmp_path / "plain.npz")
    np.savez(plain, w=np.arange(3.0))
    other_meta = str(tmp_path / "other.npz")
    np.savez(
        other_meta,
        w=np.arange(3.0),
        __meta__=np.frombuffer(b'{"format": "other", "kind": "model"}', dtype=np.uint8),
        __sha256__=np.frombuffer(b"0" * 64, dtype=np.uint8),
    )
    text = str(tmp_path / "notes.npz")
    with open(text, "w") as fh:
        fh.write("just text\n")
    for path in (plain, other_meta, text):
        with pytest.raises(CheckpointError):
            _read(path)


def test_a_plain_npy_file_is_rejected(tmp_path):
    path = str(tmp_path / "weights.npy")
    np.save(path, np.arange(3.0))
    with pytest.raises(CheckpointError):
        _read(path)


class _Payload:
    """Unpickling this creates a directory: evidence that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_an_object_array_is_rejected_without_running_code(tmp_path):
    good = _write(tmp_path / "m.npz")
    with np.load(good, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    marker = str(tmp_path / "pwned")
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    path = str(tmp_path / "evil.npz")
    np.savez(path, **members, evil=evil)
    with pytest.raises(CheckpointError):
        _read(path)
    assert not os.path.exists(marker)
    # the payload is live: loading with pickle allowed would have run it
    with np.load(path, allow_pickle=True) as z:
        z["evil"]
    assert os.path.isdir(marker)


def test_a_pickle_file_is_rejected_without_running_code(tmp_path):
    import pickle

    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "model.npz")
    with open(path, "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    with pytest.raises(CheckpointError):
        _read(path)
    assert not os.path.exists(marker)


# -- atomic writes -------------------------------------------------------------------------------


class _Boom(Exception):
    pass


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = str(tmp_path / "model.npz")
    with open(path, "wb") as fh:
        fh.write(b"old contents")

    def write(fh):
        fh.write(b"half of the new")
        raise _Boom

    with pytest.raises(_Boom):
        atomic_write(path, write)
    with open(path, "rb") as fh:
        assert fh.read() == b"old contents"
    assert os.listdir(tmp_path) == ["model.npz"]


def test_atomic_write_failure_without_an_old_file_leaves_nothing(tmp_path):
    path = str(tmp_path / "sub" / "model.npz")

    def write(fh):
        raise _Boom

    with pytest.raises(_Boom):
        atomic_write(path, write)
    assert os.listdir(tmp_path / "sub") == []


def test_atomic_write_replaces_the_file(tmp_path):
    path = str(tmp_path / "f.bin")
    atomic_write(path, lambda fh: fh.write(b"one"))
    atomic_write(path, lambda fh: fh.write(b"two"))
    with open(path, "rb") as fh:
        assert fh.read() == b"two"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_path_removes_its_temporary_on_failure(tmp_path):
    path = str(tmp_path / "f.bin")
    with pytest.raises(_Boom), atomic_path(path) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp != path
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise _Boom
    assert os.listdir(tmp_path) == []


def test_write_archive_failure_keeps_the_previous_archive(tmp_path, monkeypatch):
    path = _write(tmp_path / "m.npz")

    def failing_savez(fh, **members):
        fh.write(b"PK\x03\x04 partial")
        raise _Boom

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(_Boom):
        _write(path, arrays={"w": np.zeros(2)})
    monkeypatch.undo()
    _assert_arrays_equal(_read(path)[1])
    assert os.listdir(tmp_path) == ["m.npz"]


def test_archive_bytes_do_not_contain_pickle_opcodes_for_plain_data(tmp_path):
    """Sanity for the 'no pickle' promise: every member is a plain .npy."""
    path = _write(tmp_path / "m.npz")
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            with z.open(name) as fh:
                header = io.BytesIO(fh.read(10))
            assert header.read(6) == b"\x93NUMPY", name
