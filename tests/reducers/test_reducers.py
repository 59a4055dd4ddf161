import numpy as np
import pytest
import torch
from helpers import padded_ids, tiny_llama

from generator import architectures as adapters
from generator.analysis import pca
from generator.capture.batch import Batch
from generator.capture.hashing import token_hash
from generator.capture.hooks import Capture
from generator.capture.sites import all_sites
from generator.reducers.base import chan_merge
from generator.reducers.covariance import Covariance
from generator.reducers.means import MeanState
from generator.reducers.norms import NormStats
from generator.reducers.reservoir import Reservoir
from generator.reducers.sample_norms import SampleNorms


class Keep:
    def __init__(self, site):
        self.site, self.rows, self.idx = site, [], []

    def wants(self, s):
        return s == self.site

    def update(self, state):
        self.rows.append(state.rows.double().numpy())
        s, p = state.batch.flat_index
        self.idx.append(np.stack([s.numpy(), p.numpy()], 1))


def _run(reducers, batches, model):
    cap = Capture(model, adapters.for_config(model.config), reducers)
    with cap:
        for b in batches:
            cap.run(b)


@pytest.fixture(scope="module")
def setup():
    model = tiny_llama(n_layer=2, hidden=32)
    ids, mask = padded_ids(8, 12, seed=3, pads={3: 7, 6: 2})
    batches = [Batch(ids[i:i + 2], mask[i:i + 2], torch.arange(i, i + 2)) for i in range(0, 8, 2)]
    return model, batches


def _make(kind, sites):
    return {
        "norms": lambda: NormStats(sites, 12),
        "mean": lambda: MeanState(sites, 32, keep=("site", "position"), seq_len=12),
        "mean_sample": lambda: MeanState(sites, 32, keep=("sample",), max_samples=8),
        "cov": lambda: Covariance(sites, 32),
        "cov_unit": lambda: Covariance(sites, 32, unit=True, min_position=1),
        "res": lambda: Reservoir(sites, 32, k=40, seed=5),
        "sample_norms": lambda: SampleNorms(sites, 8, 12),
    }[kind]()


KINDS = ["norms", "mean", "mean_sample", "cov", "cov_unit", "res", "sample_norms"]


@pytest.mark.parametrize("kind", KINDS)
def test_merge_of_two_shards_equals_one_pass(setup, kind):
    model, batches = setup
    sites = [s for s in all_sites(2) if s.point in ("attn", "resid_mlp")]
    whole, a, b = _make(kind, sites), _make(kind, sites), _make(kind, sites)
    _run([whole], batches, model)
    _run([a], batches[:1], model)
    _run([b], batches[1:], model)
    a.merge(b)
    wa, ma = whole.arrays(), a.arrays()
    # MeanState and Covariance sum a shard in float32 (documented); the rest are float64 throughout
    rtol, atol = (1e-6, 1e-5) if kind.startswith(("mean", "cov")) else (1e-10, 1e-9)
    for key in wa:
        np.testing.assert_allclose(ma[key], wa[key], rtol=rtol, atol=atol, err_msg=key)


def test_statistics_match_numpy_on_materialized_states(setup):
    model, batches = setup
    site = next(s for s in all_sites(2) if s.point == "resid_attn" and s.block == 1)
    keep = Keep(site)
    ns, cov, cu = NormStats([site], 12), Covariance([site], 32), Covariance([site], 32, unit=True)
    ms = MeanState([site], 32, keep=("position",), seq_len=12)
    _run([keep, ns, cov, cu, ms], batches, model)
    x = np.concatenate(keep.rows)
    idx = np.concatenate(keep.idx)
    norms = np.linalg.norm(x, axis=1)
    assert ns.state["n"][0] == len(x) == 8 * 12 - 5 - 10
    np.testing.assert_allclose(ns.state["mean"][0], norms.mean(), rtol=1e-6)
    np.testing.assert_allclose(ns.variance()[0], norms.var(ddof=1), rtol=1e-5)
    for p in range(12):
        np.testing.assert_allclose(ns.mean_pos()[0, p], norms[idx[:, 1] == p].mean(), rtol=1e-6)
    assert ns.state["n_pos"][0].sum() == len(x)
    np.testing.assert_allclose(cov.covariance(), np.cov(x.T), rtol=1e-4, atol=1e-6)
    u = x / norms[:, None]
    np.testing.assert_allclose(cu.covariance(), np.cov(u.T), rtol=1e-4, atol=1e-6)
    means, counts = ms.means()
    for p in range(12):
        # each batch is summed in float32 (at most a batch of rows per slot), then in float64
        scale = np.abs(x).max()
        np.testing.assert_allclose(means[0, 0, p], x[idx[:, 1] == p].mean(0), rtol=1e-6,
                                   atol=1e-6 * scale)
        assert counts[0, 0, p] == (idx[:, 1] == p).sum()


@pytest.mark.parametrize("drop_above", [0.0, 1.8])
def test_stratified_covariance_is_the_weighted_estimate(setup, monkeypatch, drop_above):
    """Heavy tokens (>= keep_above x the site's median norm in the batch) weigh 1, hashed ones
    `every`; with `drop_above`, tokens above it x the median weigh 0, hashed or not. A 64-row
    pool overflows mid-batch, so chunked products are exercised too."""
    monkeypatch.setattr(Covariance, "POOL_BYTES", 64 * 4 * 32)
    monkeypatch.setattr(Covariance, "HEAVY_FRACTION", 1.0)  # room for every heavy token
    model, batches = setup
    sites = [s for s in all_sites(2) if s.point in ("attn", "mlp")]
    keeps = [Keep(s) for s in sites]
    cov = Covariance(sites, 32, every=2, min_position=1, keep_above=1.5, drop_above=drop_above)
    assert cov.capacity == 64
    _run([*keeps, cov], batches, model)
    rows, weights, n_heavy, n_dropped = [], [], 0, 0
    for k in keeps:
        for x, idx in zip(k.rows, k.idx, strict=True):  # one batch of one site
            valid = idx[:, 1] >= 1
            norms = np.linalg.norm(x, axis=1)
            median = np.sort(norms[valid])[(valid.sum() - 1) // 2]  # torch: the lower median
            kept = valid & (norms <= drop_above * median) if drop_above else valid
            heavy = kept & (norms >= 1.5 * median)
            hashed = kept & (token_hash(torch.as_tensor(idx[:, 0]), torch.as_tensor(idx[:, 1]),
                                        0).numpy() % 2 == 0)
            sel = heavy | hashed
            rows.append(x[sel])
            weights.append(np.where(heavy[sel], 1.0, 2.0))
            n_heavy += heavy.sum()
            n_dropped += (valid & ~kept).sum()
    x, w = np.concatenate(rows), np.concatenate(weights)
    assert 0 < n_heavy < len(x) and len(x) > 2 * cov.capacity
    assert (n_dropped > 0) == (drop_above > 0)
    mean = (w[:, None] * x).sum(0) / w.sum()
    c = x - mean
    m2 = (c * w[:, None]).T @ c
    st = cov.state
    np.testing.assert_allclose(st["n"], w.sum())
    np.testing.assert_allclose(st["mean"], mean, rtol=1e-5, atol=1e-6 * np.abs(x).max())
    np.testing.assert_allclose(st["m2"], m2, rtol=1e-4, atol=1e-5 * np.abs(m2).max())


def test_chan_merge_keeps_precision_with_large_offset():
    rng = np.random.default_rng(0)
    x = 1e6 + rng.normal(size=(20000, 3))
    parts = np.array_split(x, 7)
    n, mean, m2 = np.zeros(()), np.zeros(3), np.zeros((3, 3))
    for p in parts:
        c = p - p.mean(0)
        n, mean, m2 = chan_merge(n, mean, m2, np.asarray(float(len(p))), p.mean(0), c.T @ c, outer=True)
    np.testing.assert_allclose(m2 / (n - 1), np.cov(x.T), rtol=1e-8)


@pytest.mark.parametrize("consume", [False, True])
def test_a_run_covariance_merges_into_its_own_arrays_bitwise_as_chan_merge(setup, consume):
    """After the first merge (which takes the shard's arrays when it may consume them) the
    totals' mean and M2 stay where they are (no new d x d arrays per shard) and hold exactly
    what the allocating merge gives; arrays lent by `load` are never written into."""
    model, batches = setup
    sites = [s for s in all_sites(2) if s.point in ("attn", "resid_mlp")]
    parts = []
    for b in batches:
        p = Covariance(sites, 32)
        _run([p], [b], model)
        parts.append(p.arrays())
    parts[0]["mean"][:3] = [-0.0, 0.0, -1.5]  # zeros of both signs: the merge from zeros
    parts[0]["m2"][0, :2] = [-0.0, 0.0]  # makes them +0, and so must taking the arrays
    total = Covariance(sites, 32)
    n, mean, m2 = np.zeros(()), np.zeros(32), np.zeros((32, 32))
    kept = None
    for i, p in enumerate(parts):
        given = {k: v.copy() for k, v in p.items()}
        total._merge_arrays(given, consume=consume)
        n, mean, m2 = chan_merge(n, mean, m2, p["n"], p["mean"], p["m2"], outer=True)
        if i == 0:
            assert (total._state["m2"] is given["m2"]) == consume
            assert np.array_equal(np.signbit(total._state["mean"]), np.signbit(mean))
            assert np.array_equal(np.signbit(total._state["m2"]), np.signbit(m2))
        kept = kept or (total._state["mean"], total._state["m2"])
    assert total._state["mean"] is kept[0] and total._state["m2"] is kept[1]
    st = total.arrays()
    assert st["n"] == n and np.array_equal(st["mean"], mean) and np.array_equal(st["m2"], m2)
    lent = {k: np.array(v) for k, v in parts[0].items()}
    before = {k: v.copy() for k, v in lent.items()}
    loaded = Covariance(sites, 32)
    loaded.load(lent)
    loaded._merge_arrays(parts[1])
    assert all(np.array_equal(lent[k], before[k]) for k in lent)
    assert np.array_equal(loaded.arrays()["m2"], chan_merge(
        *(before[k] for k in ("n", "mean", "m2")), *(parts[1][k] for k in ("n", "mean", "m2")),
        outer=True)[2])


@pytest.mark.parametrize("matmul_dtype", [torch.float32, torch.float64])
def test_a_covariance_read_midway_goes_on_summing(setup, matmul_dtype):
    """Reading folds the open sums into totals that take over the folded arrays: they must be
    copies of the products' accumulator (kept, and zeroed by the next batch), whatever its
    dtype."""
    model, batches = setup
    sites = [s for s in all_sites(2) if s.point in ("attn", "resid_mlp")]
    whole, cov = Covariance(sites, 32, matmul_dtype=matmul_dtype), \
        Covariance(sites, 32, matmul_dtype=matmul_dtype)
    _run([whole], batches, model)
    _run([cov], batches[:2], model)
    cov.arrays()
    _run([cov], batches[2:], model)
    for key, want in whole.arrays().items():
        np.testing.assert_allclose(cov.arrays()[key], want, rtol=1e-6, atol=1e-5, err_msg=key)


def test_reservoir_is_batching_invariant_and_serializable(setup):
    model, batches = setup
    sites = all_sites(2)
    one, other = Reservoir(sites, 32, k=50, seed=9), Reservoir(sites, 32, k=50, seed=9)
    _run([one], batches, model)
    merged = [Batch(torch.cat([b.input_ids for b in batches]), torch.cat([b.mask for b in batches]),
                    torch.arange(8))]
    _run([other], merged, model)
    a, b = one.arrays(), other.arrays()
    np.testing.assert_array_equal(a["key"], b["key"])
    np.testing.assert_allclose(a["vectors"], b["vectors"], rtol=1e-5, atol=1e-5)
    assert len(a["key"]) == 50 and len(set(a["depth"])) > 3
    clone = Reservoir(sites, 32, k=50, seed=9)
    clone.load(a)
    np.testing.assert_array_equal(clone.arrays()["key"], a["key"])


def test_pca_from_streaming_covariance_matches_sklearn():
    """States streamed through Covariance.update (batches, padding, an offset) give sklearn's PCA."""
    from sklearn.decomposition import PCA

    from generator.capture.batch import State

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 20)) @ rng.normal(size=(20, 20)) + 50.0
    site = all_sites(1)[0]
    cov = Covariance([site], 20)
    cov.POOL_BYTES = 20 * 4 * 100  # a small pool: several products per batch, merged in float64
    cov.capacity = 100
    for n, part in enumerate(np.array_split(x, 6)):
        t = len(part)
        h = torch.zeros(1, t + 3, 20)
        h[0, :t] = torch.from_numpy(part).float()
        h[0, t:] = 1e6  # padding: must never reach the statistic
        mask = torch.zeros(1, t + 3, dtype=torch.bool)
        mask[0, :t] = True
        cov.update(State(site, h, Batch(torch.zeros(1, t + 3, dtype=torch.long), mask,
                                        torch.tensor([n]))))
        cov.end_batch()
    assert float(cov.state["n"]) == len(x)
    ours = pca.from_covariance(cov.state["mean"], cov.covariance(), 5)
    ref = PCA(5).fit(x)
    np.testing.assert_allclose(ours.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=1e-4)
    # same subspace: |cos| between matching components is 1
    np.testing.assert_allclose(np.abs(np.sum(ours.components * ref.components_, axis=1)), 1, atol=1e-4)


@pytest.mark.parametrize("close_rows", [1 << 16, 700])
def test_covariance_block_triangle_and_closes_match_numpy(monkeypatch, close_rows):
    """At a width that splits into 4 uneven blocks (only the upper block triangle is multiplied,
    then mirrored), with an offset far above the spread and a mean that drifts between batches
    (each accumulation is centered on its first rows), the covariance equals numpy's float64 one;
    a small `CLOSE_ROWS` folds the float32 accumulator several times in one shard."""
    from generator.capture.batch import State

    monkeypatch.setattr(Covariance, "CLOSE_ROWS", close_rows)
    rng = np.random.default_rng(2)
    d = 301
    x = rng.normal(size=(2400, 40)) @ rng.normal(size=(40, d)) + rng.normal(size=d) * 1e3
    x[1200:] += 5.0  # the second half of the batches drifts away from the first rows' center
    site = all_sites(1)[0]
    cov = Covariance([site], d)
    assert len(cov._edges(d)) == 5
    with torch.inference_mode():  # as in a capture; the state is read outside it
        for n, part in enumerate(np.array_split(x, 8)):
            h = torch.from_numpy(part).float().unsqueeze(0)
            cov.update(State(site, h, Batch(torch.zeros(1, len(part), dtype=torch.long),
                                            torch.ones(1, len(part), dtype=torch.bool),
                                            torch.tensor([n]))))
            cov.end_batch()
    xf = x.astype(np.float32).astype(np.float64)  # what the reducer is given
    c = xf - xf.mean(0)
    st = cov.state
    np.testing.assert_allclose(st["mean"], xf.mean(0), rtol=1e-7, atol=1e-8 * np.abs(xf).max())
    np.testing.assert_allclose(st["m2"], c.T @ c, rtol=1e-4, atol=1e-5 * np.abs(c.T @ c).max())
    np.testing.assert_allclose(st["m2"], st["m2"].T)  # mirrored exactly


@pytest.mark.parametrize("piece_rows", [None, 3])
def test_reservoir_slots_hold_the_k_smallest_keys_with_their_own_rows(setup, monkeypatch,
                                                                     piece_rows):
    """Shards merged into a total (rows copied slot by slot, never concatenated) equal one pass;
    merging a shard a second time changes nothing (a (key, site) pair is kept once); every kept
    row is the state at its labelled (site, sample, position). Also with rows gathered a few at
    a time (`PIECE_BYTES`), as SmolLM2's 24,000 rows are."""
    if piece_rows:
        monkeypatch.setattr(Reservoir, "PIECE_BYTES", piece_rows * 4 * 32)
    model, batches = setup
    sites = [s for s in all_sites(2) if s.point in ("attn", "resid_mlp")]
    keeps = {(s.depth): Keep(s) for s in sites}
    one = Reservoir(sites, 32, k=30, seed=4)
    _run([one, *keeps.values()], batches, model)
    total, shards = Reservoir(sites, 32, k=30, seed=4), []
    for b in batches:
        shard = Reservoir(sites, 32, k=30, seed=4)
        _run([shard], [b], model)
        shards.append(shard)
        total.merge(shard)
    want = one.arrays()
    got = total.arrays()
    np.testing.assert_array_equal(got["key"], want["key"])
    np.testing.assert_allclose(got["vectors"], want["vectors"], rtol=1e-6, atol=1e-6)
    total.merge(shards[1])
    again = total.arrays()
    for k in want:
        np.testing.assert_array_equal(again[k], got[k])
    assert len(np.unique(got["key"])) == 30 and np.all(np.diff(got["key"]) >= 0)
    for row, d, s, p in zip(got["vectors"], got["depth"], got["sample"], got["position"], strict=True):
        k = keeps[int(d)]
        idx = np.concatenate(k.idx)
        match = np.flatnonzero((idx[:, 0] == s) & (idx[:, 1] == p))
        np.testing.assert_allclose(row, np.concatenate(k.rows)[match[0]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda s: Covariance(s, 768), lambda s: Covariance(s, 768, unit=True),
                                  lambda s: MeanState(s, 768, keep=("site", "position"), seq_len=64)],
                         ids=["cov", "cov_unit", "mean"])
def test_an_empty_reducer_allocates_nothing_for_its_totals(make):
    """The executor empties its shard reducers before every shard (`reset`). Their totals are
    replaced by the first merge, never written in place, so they take no memory until then:
    zeros allocated for them came from the heap's free memory once it had some, where calloc
    writes every byte, and stayed resident under the shard's forwards (4.5 MB per covariance at
    width 768)."""
    import tracemalloc

    r = make(all_sites(2))
    tracemalloc.start()
    try:
        r.reset()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 768 * 768 * 8 // 8


def test_a_shard_reservoir_merges_its_pending_rows_without_slots_of_its_own(setup):
    """A shard whose candidates never reach `k / 2` (the runner's short shards of a long run)
    hands them straight to the total at its merge: it never makes its own k-row block, which
    lived in the heap under every later forward and held nothing between merges. The total
    still equals one pass over the same batches (k smallest keys, their own rows)."""
    model, batches = setup
    sites = [s for s in all_sites(2) if s.point in ("attn", "resid_mlp")]
    k = 400  # pending rows must pass max(k // 2, 64) = 200 before a shard takes them in
    one = Reservoir(sites, 32, k=k, seed=4)
    _run([one], batches, model)
    total = Reservoir(sites, 32, k=k, seed=4)
    for b in batches:
        shard = Reservoir(sites, 32, k=k, seed=4)
        _run([shard], [b], model)
        assert 0 < shard._pending_rows < k // 2
        total.merge(shard)
        assert shard._slots is None
    want, got = one.arrays(), total.arrays()
    for key in Reservoir.LABELS:
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["vectors"], want["vectors"])


def test_row_pool_is_small_in_the_cpu_heap_and_large_on_a_gpu(setup):
    """The CPU's pool is `POOL_BYTES` (the heap the forward allocates from: a 32 MB pool per
    covariance raised the bench's peak RSS by 350 MB); a GPU's holds `GPU_POOL_BYTES` of rows,
    fewer products and kernel launches per batch. The CPU size is what a real update allocates."""
    cov = Covariance(all_sites(1), 768)
    assert cov._pool_rows(torch.device("cpu")) * 768 * 4 <= Covariance.POOL_BYTES
    assert cov._pool_rows(torch.device("cuda")) == Covariance.GPU_POOL_BYTES // (768 * 4)
    assert Covariance.GPU_POOL_BYTES >= 4 * Covariance.POOL_BYTES
    model, batches = setup
    cov = Covariance([s for s in all_sites(2) if s.point == "attn"], 32)
    _run([cov], batches, model)
    assert cov._buf is not None and cov._buf.nbytes <= Covariance.POOL_BYTES


def test_the_pool_and_accumulator_are_made_before_the_first_forward(setup):
    """Run-long buffers made by a forward's first sites would sit in the holes its earlier
    blocks freed for the whole run: `begin_batch` makes them, and the forward makes no other."""
    model, batches = setup
    cov = Covariance([s for s in all_sites(2) if s.point == "attn"], 32)
    cov.begin_batch(batches[0])
    made = cov._buf, cov._wbuf, cov._g
    assert all(t is not None for t in made) and not cov._g.any()
    with Capture(model, adapters.for_config(model.config), [cov]) as cap:
        for b in batches:
            cap.run(b)
    now = cov._buf, cov._wbuf, cov._g
    assert all(x is y for x, y in zip(now, made, strict=True)) and cov._g.any()


def test_a_reset_pool_keeps_its_size(setup, monkeypatch):
    """The executor resets its shard reducers for every shard and keeps their pools: the pool's
    row count goes with it (a GPU's pool is larger than what `POOL_BYTES` gives a fresh
    instance; were it not kept, later shards would fill it only that far, or past its end)."""
    model, batches = setup
    sites = [s for s in all_sites(2) if s.point == "attn"]
    monkeypatch.setattr(Covariance, "POOL_BYTES", 64 * 4 * 32)
    cov, ref = Covariance(sites, 32, unit=True), Covariance(sites, 32, unit=True)
    _run([cov], batches, model)
    monkeypatch.setattr(Covariance, "POOL_BYTES", 512 * 4 * 32)  # what a fresh one would take
    cov.reset()
    assert cov.capacity == len(cov._buf) == 64
    _run([cov, ref], batches, model)
    np.testing.assert_allclose(cov.state["m2"], ref.state["m2"], rtol=1e-4, atol=1e-6)


def test_bfloat16_products_stay_within_their_rounding_of_the_float32_covariance():
    """`matmul_dtype="bfloat16"` (what `capture.cov_matmul = "auto"` picks on CPUs with native
    bfloat16) rounds inputs and each product's result to bfloat16 and sums in float32: the
    covariance lands within a few 1e-3 of the float32 one (relative, Frobenius) and its leading
    PCA matches, while it is measurably not the float32 computation (the option is really used).
    A planted low-rank structure with an offset, streamed in batches as a capture would."""
    from generator.capture.batch import State

    rng = np.random.default_rng(5)
    d = 96
    x = rng.normal(size=(6000, 8)) @ rng.normal(size=(8, d)) * 3 + rng.normal(size=(6000, d))
    x += rng.normal(size=d) * 50
    site = all_sites(1)[0]
    covs = {dt: Covariance([site], d, matmul_dtype=dt) for dt in ("float32", "bfloat16")}
    with torch.inference_mode():
        for n, part in enumerate(np.array_split(x, 12)):
            h = torch.from_numpy(part).float().unsqueeze(0)
            b = Batch(torch.zeros(1, len(part), dtype=torch.long),
                      torch.ones(1, len(part), dtype=torch.bool), torch.tensor([n]))
            for c in covs.values():
                c.update(State(site, h, b))
                c.end_batch()
    f32, b16 = (covs[k].covariance() for k in ("float32", "bfloat16"))
    assert covs["bfloat16"].config()["matmul_dtype"] == "bfloat16"
    rel = np.linalg.norm(b16 - f32) / np.linalg.norm(f32)
    assert 1e-6 < rel < 5e-3
    fits = [pca.from_covariance(covs[k].state["mean"], c, 8) for k, c in
            (("float32", f32), ("bfloat16", b16))]
    np.testing.assert_allclose(fits[1].explained_variance_ratio, fits[0].explained_variance_ratio,
                               atol=1e-4)
    cosines = np.linalg.svd(fits[0].components @ fits[1].components.T, compute_uv=False)
    assert cosines.min() > 0.9999


def test_products_dtype_is_bfloat16_only_where_the_device_multiplies_it_natively(monkeypatch):
    from generator.reducers.covariance import products_dtype

    for choice in ("float32", "bfloat16"):  # asked for: taken as is, on any device
        assert products_dtype(choice, "cpu") == products_dtype(choice, "cuda") == choice
    for avx512, amx, want in ((True, False, "bfloat16"), (False, True, "bfloat16"),
                              (False, False, "float32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert products_dtype("auto", "cpu") == want
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda v=bf16: v)
        assert products_dtype("auto", "cuda") == want
    assert products_dtype("auto", "meta") == "float32"


@pytest.mark.parametrize("keep", [("site", "position"), ("position",)])
def test_a_reused_position_means_shard_sums_what_a_fresh_one_does(setup, keep):
    """The executor's shard reducers are reset and reused; sums by position are not zeroed by
    the reset but written over by the next shard's first batch. Whatever a shard holds (full
    batches; shorter sequences, which write only their first positions; a batch that reaches one
    site; no batch at all), the run's totals are bitwise those of a fresh reducer per shard,
    with a slot per site and with every site pooled into one slot (written by the first site
    of a shard, added to by the rest)."""
    from generator.capture.batch import State

    model, batches = setup
    sites = [s for s in all_sites(2) if s.point in ("attn", "resid_mlp")]
    short = [Batch(b.input_ids[:, :7], b.mask[:, :7], b.sample_ids) for b in batches[2:]]
    one_site = torch.randn(2, 12, 32, generator=torch.Generator().manual_seed(1))

    def reach_one_site(r):  # a batch whose forward reached only the first site
        with torch.inference_mode():
            r.update(State(sites[0], one_site, batches[0]))
            r.end_batch()  # as the capture does after each forward

    shards = [lambda r: _run([r], batches[:2], model), lambda r: _run([r], short, model),
              reach_one_site, lambda r: None, lambda r: _run([r], batches[1:3], model)]

    def make():
        return MeanState(sites, 32, keep=keep, seq_len=12)

    reused, fresh_total, reused_total = make(), make(), make()
    for fill in shards:
        reused.reset()
        fill(reused)
        reused_total.merge(reused, consume=False)  # as the executor merges a reused shard
        fresh = make()
        fill(fresh)
        fresh_total.merge(fresh, consume=False)
        assert reused._stale == set()  # every slot was written or zeroed before the merge read it
    want, got = fresh_total.arrays(), reused_total.arrays()
    assert got["count"].sum() > 0 and np.abs(got["sum"]).sum() > 0
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
