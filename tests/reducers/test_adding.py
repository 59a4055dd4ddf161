import os
import signal
import threading

import numpy as np
import pytest
import torch

from generator.reducers import adding
from generator.reducers.adding import MIN_SPLIT, add_into


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _arrays(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n) * 1e3, rng.standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("n", [MIN_SPLIT + 3, 3 * MIN_SPLIT + 1, 1000])
def test_add_into_is_bitwise_numpys_add(two_threads, n):
    total, part = _arrays(n)
    want = total + part
    add_into(total, part)
    np.testing.assert_array_equal(total, want)


def test_large_adds_are_split_across_threads_and_shapes_are_kept(two_threads, monkeypatch):
    """Each part is added by its own thread (the caller's and a helper), in place, 2-D too."""
    seen = []
    real = np.add

    def spy(*a, **k):
        seen.append((threading.current_thread().name, a[0].size))
        return real(*a, **k)

    total, part = _arrays(6 * (MIN_SPLIT // 3 + 1))
    total, part = total.reshape(-1, 6), part.reshape(-1, 6)
    want = total + part
    monkeypatch.setattr(adding.np, "add", spy)
    add_into(total, part)
    monkeypatch.undo()
    np.testing.assert_array_equal(total, want)
    names = {name for name, _ in seen}
    assert len(seen) == 2 and any(n.startswith("atlas-add") for n in names) and len(names) == 2
    assert sum(size for _, size in seen) == total.size


def test_a_view_that_is_not_contiguous_is_added_in_one_call(two_threads):
    total, part = _arrays(4 * MIN_SPLIT)
    view, pv = total[::2], part[1::2]
    want = view + pv
    add_into(view, pv)
    np.testing.assert_array_equal(total[::2], want)


def test_a_forked_child_adds_with_threads_of_its_own(two_threads):
    """A child forked after the helpers exist inherits none of their threads, only the executor
    object: it must make its own, not wait forever on the parent's."""
    total, part = _arrays(2 * MIN_SPLIT)
    add_into(total.copy(), part)  # the parent's helpers exist now
    pid = os.fork()
    if pid == 0:  # child: killed by the alarm if the add never returns
        signal.alarm(30)
        t = total.copy()
        add_into(t, part)
        os._exit(0 if np.array_equal(t, total + part) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
