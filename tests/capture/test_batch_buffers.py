"""What the capture keeps from a batch is allocated before its forward, in buffers reused.

Small tensors made during the forward and kept past their block split the holes the forward's
freed temporaries leave in glibc's heap, so the forward's next temporaries take fresh pages:
page faults on every batch, and a higher peak. So every state's norms, each block's deferred
check and the sinks' per-batch buffers (`begin_batch`) are made before the forward, once per
batch shape. These tests pin that down, and that the buffered path gives the same bits as the
one a caller without `begin_batch` takes.
"""

import torch
from helpers import padded_ids, tiny_llama

from generator import architectures as adapters
from generator.capture.hooks import Capture
from generator.capture.sites import all_sites
from generator.inputs import TokenInputs
from generator.reducers.covariance import Covariance
from generator.reducers.norms import NormStats
from generator.reducers.reservoir import Reservoir
from generator.reducers.states import dump_states


def _inputs():
    ids, mask = padded_ids(8, 12, seed=3, pads={3: 7, 6: 2})
    return TokenInputs("text", ids, mask, 2)


def _run(model, sinks):
    with Capture(model, adapters.for_config(model.config), sinks, deferred=True) as cap:
        for b in _inputs().batches():
            cap.run(b)
        cap.verify()
    return cap


def _reducers(d, sites):
    mid = [s for s in sites if s.point in ("attn", "mlp")]
    return [NormStats(sites, 12),
            Covariance(mid, d, every=4, min_position=1, keep_above=1.2, drop_above=4.0),
            Covariance(sites, d, unit=True, every=4, min_position=1, drop_above=4.0),
            Reservoir(sites, d, k=30, seed=5)]


class _Storages:
    """A sink that notes where every state's norms live."""

    def __init__(self):
        self.ptrs = []

    def wants(self, site):
        return True

    def update(self, state):
        self.ptrs.append(state.norms2d.untyped_storage().data_ptr())


class _NoBegin:
    """A reducer seen through a sink without `begin_batch`: the path of callers that skip it."""

    def __init__(self, r):
        self.r = r

    def wants(self, site):
        return self.r.wants(site)

    def update(self, state):
        self.r.update(state)

    def end_batch(self):
        self.r.end_batch()


def test_every_states_norms_are_written_into_one_buffer_for_all_batches():
    model = tiny_llama(n_layer=2)
    spy = _Storages()
    _run(model, [spy])
    assert len(spy.ptrs) == len(all_sites(2)) * 4  # every site of the 4 batches
    assert len(set(spy.ptrs)) == 1


def test_sinks_get_their_batch_buffers_before_the_forward_and_keep_them():
    model = tiny_llama(n_layer=2)
    cov = Covariance(all_sites(2), 32, every=4, min_position=1, keep_above=1.2)
    res = Reservoir(all_sites(2), 32, k=30, seed=5)
    seen = []

    def at_forward_start(_module, _args):  # before the embedding: no site has arrived yet
        seg = cov._seg
        seen.append((seg["sites"], len(res._cand["arrived"]), res._cand["rows"].data_ptr(),
                     tuple(seg[k].data_ptr() for k in ("norms", "hvals", "hidx"))))

    handle = model.register_forward_pre_hook(at_forward_start)
    try:
        cap = _run(model, [cov, res])
    finally:
        handle.remove()
    assert len(seen) == 4
    assert all(s[0] == 0 and s[1] == 0 for s in seen)  # made before any site of the batch
    assert len({s[3] for s in seen}) == 1  # the covariance's buffers: the same every batch
    assert cap._gaps is not None and cap._n_gaps == 0  # the deferred check's buffer, read


def test_buffered_and_unbuffered_paths_give_the_same_bits():
    model = tiny_llama(n_layer=2)
    sites = all_sites(2)
    a, b = _reducers(32, sites), _reducers(32, sites)
    _run(model, a)
    _run(model, [_NoBegin(r) for r in b])
    assert any(len(r._bufs) for r in a if isinstance(r, Covariance))
    assert dump_states(a) == dump_states(b)
    assert torch.isfinite(torch.as_tensor(a[1].covariance())).all()
