"""Totals kept on disk between shards: the same bits as in memory, the shard's forward passes free
of them, and a full or vanished disk handled without losing or corrupting a number."""

import errno
import logging

import numpy as np
import pytest
from helpers import every_reducer_kind, padded_ids, tiny_llama

from generator import architectures as adapters
from generator import executors
from generator.errors import AtlasError
from generator.executors import Local
from generator.fsutil import clean_temp, scratch_dir
from generator.inputs import TokenInputs
from generator.reducers import spill
from generator.reducers.means import MeanState
from generator.reducers.reservoir import Reservoir
from generator.reducers.sample_norms import SampleNorms


@pytest.fixture(scope="module")
def model_and_inputs():
    model = tiny_llama(n_layer=2, hidden=32)
    ids, mask = padded_ids(10, 12, seed=7, pads={3: 4, 8: 9})
    return model, TokenInputs("text", ids, mask, batch_size=2)


def _capture(model_and_inputs, folder=None, after=None, reducers=None):
    model, inputs = model_and_inputs
    reducers = every_reducer_kind() if reducers is None else reducers
    Local(model, adapters.for_config(model.config), "cpu", shard_batches=2, progress=False,
          after_shard=after).capture(inputs, reducers, "t", spill=folder)
    return reducers


def _same(got, want):
    for g, w in zip(got, want, strict=True):
        a, b = g.arrays(), w.arrays()
        assert a.keys() == b.keys()
        for key in b:
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            assert np.array_equal(np.signbit(a[key]), np.signbit(b[key])), key  # zeros too


def test_spilled_totals_are_bitwise_the_in_memory_ones_and_leave_memory_while_on_disk(
        model_and_inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "SPILL_MIN_BYTES", 0)
    seen = []
    on_disk = every_reducer_kind()
    sums = [r for r in on_disk if isinstance(r, MeanState | SampleNorms)]
    reservoir = next(r for r in on_disk if isinstance(r, Reservoir))

    def after(done):  # between shards: the sums are files, their arrays hold no memory
        seen.append((done, sorted(p.name for p in tmp_path.iterdir())))
        for r in sums:
            assert r._spilled is not None and r._spilled.path.parent == tmp_path
            assert all(v.strides == (0,) * v.ndim for v in r._state.values())  # no data behind
        # the reservoir's rows: in their file, not mapped between merges
        assert reservoir._rows_file.parent == tmp_path and reservoir._slots is None

    _capture(model_and_inputs, tmp_path, after, on_disk)
    in_memory = _capture(model_and_inputs)
    assert [d for d, _ in seen] == [4, 8, 10]
    assert all(len(names) == 4 for _, names in seen)  # 2 MeanStates, SampleNorms, Reservoir
    _same(on_disk, in_memory)
    assert not list(tmp_path.iterdir())  # read back: the files are gone


def test_small_totals_stay_in_memory(model_and_inputs, tmp_path):
    reducers = _capture(model_and_inputs, tmp_path)  # the real threshold: these are KB
    assert all(getattr(r, "_spilled", None) is None for r in reducers)
    assert not list(tmp_path.iterdir())


def _failing_writes(monkeypatch, fail_from: int):
    """File writes under spill fail with ENOSPC from the `fail_from`-th call on."""
    calls = {"n": 0}
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            calls["n"] += 1
            if calls["n"] >= fail_from:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Full(f) if "w" in mode else f

    monkeypatch.setattr(spill, "open", fake_open, raising=False)
    return calls


@pytest.mark.parametrize("fail_from", [1, 2, 4])
def test_a_full_disk_keeps_the_totals_in_memory_with_the_same_bits(model_and_inputs, tmp_path,
                                                                   monkeypatch, caplog, fail_from):
    """Failing on the first write (nothing on disk yet), or in a later merge (the file holds
    the totals before it): either way the totals end up in memory, exact, and a warning says so."""
    want = _capture(model_and_inputs)
    monkeypatch.setattr(executors, "SPILL_MIN_BYTES", 0)
    calls = _failing_writes(monkeypatch, fail_from)

    def no_space(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spill.os, "posix_fallocate", no_space)  # the reservoir's rows file
    with caplog.at_level(logging.WARNING):
        got = _capture(model_and_inputs, tmp_path)
    assert calls["n"] >= fail_from
    assert "kept in memory" in caplog.text and "No space left" in caplog.text
    assert "reservoir rows kept in memory" in caplog.text
    _same(got, want)
    assert not list(tmp_path.iterdir())  # no half-written file left behind


def test_totals_lost_from_disk_are_a_named_error(model_and_inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "SPILL_MIN_BYTES", 0)
    reducers = _capture(model_and_inputs, tmp_path)
    means = reducers[1]
    means._spilled.path.unlink()  # say, the folder's disk went away
    with pytest.raises(AtlasError, match="could not be read back") as err:
        means.arrays()
    assert str(means._spilled.path) in str(err.value)
    res = next(r for r in reducers if isinstance(r, Reservoir))
    path = res._rows_file
    path.unlink()
    with pytest.raises(AtlasError, match="could not be read back") as err:
        res.arrays()
    assert str(path) in str(err.value)


def test_chunked_files_add_exactly_what_numpy_adds_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "CHUNK_BYTES", 40)  # 5 float64 per chunk: many chunks, one partial
    rng = np.random.default_rng(0)
    first = {"sum": rng.normal(size=(7, 3)).astype(np.float32), "count": np.arange(4.0)}
    parts = [{"sum": rng.normal(size=(7, 3)).astype(np.float32) * 1e3,
              "count": np.ones(4)} for _ in range(3)]
    s = spill.write(tmp_path / "t.sums", first, {"sum": np.float64, "count": np.float64})
    want = {k: v.astype(np.float64) for k, v in first.items()}
    for p in parts:
        s = spill.add(s, p)
        for k in want:
            np.add(want[k], p[k], out=want[k])
    got = spill.read(s)
    assert got["sum"].dtype == np.float64 and got["sum"].shape == (7, 3)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.sums"]  # no `.next` left


def test_a_killed_runs_spill_folder_is_cleaned_by_the_next_run(tmp_path):
    with scratch_dir(tmp_path, "spill") as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".spill.tmp-")
        (folder / "x.sums").write_bytes(b"0" * 8)
        leftover = tmp_path / (folder.name + "-killed")
        leftover.mkdir()  # what a killed run leaves: the same kind of name
    assert not folder.exists()
    clean_temp(tmp_path)
    assert not leftover.exists()
