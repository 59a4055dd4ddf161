import pytest
import torch
from helpers import tiny_gpt2, tiny_llama

from generator import architectures as adapters
from generator.capture.batch import Batch
from generator.capture.hooks import Capture
from generator.capture.sites import ALL_POINTS, all_sites
from generator.errors import CaptureError, ModelLoadError


class Recorder:
    """Keeps every state it sees (tests only: the real reducers never do this)."""

    def __init__(self):
        self.seen = {}

    def wants(self, site):
        return True

    def update(self, state):
        self.seen[(state.site.point, state.site.block)] = (state.h.clone(), state.rows.clone())


def _batch(b=3, t=10, pad_row=1, pad_from=6):
    ids = torch.randint(0, 256, (b, t))
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[pad_row, pad_from:] = False
    return Batch(ids, mask, torch.arange(b))


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_every_point_captured_and_residual_matches_hidden_states(make):
    model = make(n_layer=3)
    adapter = adapters.for_config(model.config)
    rec = Recorder()
    batch = _batch()
    cap = Capture(model, adapter, [rec])
    with cap:
        cap.run(batch)
    assert cap.checks == 3
    assert {p for p, _ in rec.seen} == set(ALL_POINTS)
    assert len(rec.seen) == len(all_sites(3))
    ref = model(input_ids=batch.input_ids, attention_mask=batch.mask.long(),
                output_hidden_states=True).hidden_states
    torch.testing.assert_close(rec.seen[("embed", -1)][0], ref[0])
    for i in range(2):  # the last entry of hidden_states is after the final norm
        torch.testing.assert_close(rec.seen[("resid_mlp", i)][0], ref[i + 1])
    torch.testing.assert_close(rec.seen[("norm_final", 3)][0], ref[-1])
    # padding never reaches reducers: 3*10 tokens minus 4 padded
    assert rec.seen[("attn", 0)][1].shape[0] == 26


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_hooks_removed_on_exit_even_after_error(make):
    model = make()
    adapter = adapters.for_config(model.config)

    def count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    with pytest.raises(RuntimeError), Capture(model, adapter, [Recorder()]):
        assert count() > 0
        raise RuntimeError("boom")
    assert count() == 0


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_tampered_attention_output_fails_the_residual_check(make):
    model = make()
    adapter = adapters.for_config(model.config)
    cap = Capture(model, adapter, [Recorder()])
    with cap:
        attn = adapter.module(model, "attn", 1)

        def tamper(_m, _a, out):  # runs after ours: the block adds a value we never saw
            return (out[0] + 0.5, *out[1:])

        handle = attn.register_forward_hook(tamper)
        with pytest.raises(CaptureError, match="block 1"):
            cap.run(_batch())
        handle.remove()


def test_unknown_model_type_lists_supported():
    class Cfg:
        model_type = "bert"

    with pytest.raises(ModelLoadError) as err:
        adapters.for_config(Cfg(), "my-bert")
    assert "gpt2" in str(err.value) and "llama" in str(err.value) and "my-bert" in str(err.value)


class Counter:
    def __init__(self, block):
        self.block, self.seen = block, []

    def wants(self, site):
        return site.point == "resid_mlp" and site.block == self.block

    def update(self, state):
        self.seen.append(state.site.block)


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_blocks_after_the_last_wanted_one_are_not_run(make):
    model = make(n_layer=4)
    adapter = adapters.for_config(model.config)
    ran = []
    handles = [adapter.block(model, i).register_forward_hook(lambda m, a, o, i=i: ran.append(i))
               for i in range(4)]
    want = Counter(block=1)
    batch = _batch()
    cap = Capture(model, adapter, [want])
    with cap:
        cap.run(batch)
    assert want.seen == [1] and ran == [0, 1] and cap.checks == 2
    ran.clear()
    with Capture(model, adapter, [want, Recorder()]) as cap:  # norm_final wanted: everything runs
        cap.run(batch)
    assert ran == [0, 1, 2, 3]
    for h in handles:
        h.remove()


def test_largest_gap_on_the_cpu_is_the_inf_norm_nan_included():
    """The CPU's fast path (`abs().amax()`) gives what `vector_norm(inf)` gives, in every dtype,
    NaN and infinity included (a NaN must fail the residual check, never pass it)."""
    from generator.capture.check import _largest

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 48, generator=g)[:, ::8]  # a strided slice, as the check takes
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        t = x.to(dtype)
        want = torch.linalg.vector_norm(t, float("inf"),
                                        dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        got = _largest(t)
        assert got.dtype == want.dtype and torch.equal(got, want)
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    assert torch.isnan(_largest(bad))
    bad[1, 2, 3] = float("-inf")
    assert _largest(bad) == float("inf")
