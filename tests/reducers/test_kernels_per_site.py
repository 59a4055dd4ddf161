"""Per site, a reducer launches one row gather; what depends on all rows runs once per batch.

On a GPU every operator is a kernel launch, and a batch reaches ~7 sites per block, so work
done per site (medians, weights, unit scaling, copies into the reservoir's slots) multiplies
launches by the depth of the model. Counted here with the CPU profiler, on operators that would
be device kernels: going from 4 sites to 16 may add at most the allowance per site (before
this was enforced: 13 per site for a unit covariance with `drop_above`, 3 for the reservoir).
"""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from generator.bench import is_kernel
from generator.capture.batch import Batch, State
from generator.capture.sites import all_sites
from generator.reducers.covariance import Covariance
from generator.reducers.reservoir import Reservoir

D, B, T = 32, 4, 64


def _kernels(make, n_sites: int) -> int:
    sites = all_sites(4)[:n_sites]
    r = make(sites)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (B, T), generator=g)
    hs = [torch.randn(B, T, D, generator=g) * (1 + 5 * (torch.rand(B, T, 1, generator=g) > 0.9))
          for _ in sites]
    for warm in (True, False):  # the first batch allocates the pools
        batch = Batch(ids, torch.ones(B, T, dtype=torch.bool), torch.arange(B))
        states = [State(s, h, batch) for s, h in zip(sites, hs, strict=True)]
        for st in states:
            _ = st.norms2d  # computed once per state for every reducer (NormStats needs it anyway)
        with profile(activities=[ProfilerActivity.CPU]) as p, torch.inference_mode():
            for st in states:
                r.update(st)
            r.end_batch()
        if not warm:
            return sum(1 for e in p.events() if is_kernel(e))
    raise AssertionError


@pytest.mark.parametrize("make,per_site", [
    (lambda s: Covariance(s, D, unit=True, every=4, min_position=1, drop_above=4.0), 1),
    (lambda s: Covariance(s, D, every=1), 1),
    (lambda s: Reservoir(s, D, k=40, seed=3), 1),  # k small: rows are taken in every batch
    # heavy tokens outside the sample are picked while the site's rows exist: its k largest
    # norms there (a mask, `topk`, the index cat): 4 kernels per site (17 with a per-site
    # median and compaction, 37 before the batched weights)
    (lambda s: Covariance(s, D, every=4, min_position=1, keep_above=1.5, drop_above=4.0), 4),
], ids=["cov_unit_drop", "cov_exact", "reservoir", "cov_stratified"])
def test_device_operators_per_site(make, per_site):
    few, many = _kernels(make, 4), _kernels(make, 16)
    assert many - few <= per_site * 12, (few, many)
