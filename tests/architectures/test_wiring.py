"""Each declaration against its tiny model, directly through `Capture`; and wrong ones must fail.

The right declaration reproduces `output_hidden_states` (embedding, block outputs, final norm)
and passes the residual check at every block; a plausible wrong one (Gemma 2 wired as LLaMA, a
parallel block wired as sequential, Falcon without the clone, Granite without its multiplier,
OPT without the reshape) fails loudly, naming the family and the block.
"""

import dataclasses

import pytest
import tiny_families
import torch

from generator import architectures
from generator.capture.batch import Batch
from generator.capture.hooks import Capture
from generator.capture.sites import ALL_POINTS
from generator.errors import AtlasError, CaptureError, ModelLoadError


class Recorder:
    def __init__(self):
        self.seen = {}

    def wants(self, site):
        return True

    def update(self, state):
        self.seen[(state.site.point, state.site.block)] = state.h.clone()


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (3, 17), generator=gen)
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[1, 11:] = False
    return Batch(ids, mask, torch.arange(3))


def _capture(model, arch):
    rec, batch = Recorder(), _batch()
    cap = Capture(model, arch, [rec])
    with cap:
        cap.run(batch)
    return cap, rec, batch


@pytest.mark.parametrize("name", sorted(tiny_families.VARIANTS))
def test_declaration_reproduces_the_model_and_passes_the_residual_check(name):
    model = tiny_families.build(name)
    arch = architectures.for_config(model.config, name)
    before = _hooks(model)
    cap, rec, batch = _capture(model, arch)
    assert _hooks(model) == before
    assert cap.checks == 2
    absent = set(arch.absent(model.config))
    assert absent == ({"resid_attn"} if name in tiny_families.PARALLEL else
                      {"norm_attn", "norm_mlp"} if name == "olmo2" else set())
    assert {p for p, _ in rec.seen} == set(ALL_POINTS) - absent
    ref = model(input_ids=batch.input_ids, attention_mask=batch.mask.long(),
                output_hidden_states=True).hidden_states
    valid = batch.mask
    torch.testing.assert_close(rec.seen[("embed", -1)][valid], ref[0][valid])
    torch.testing.assert_close(rec.seen[("resid_mlp", 0)][valid], ref[1][valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rec.seen[("norm_final", 2)][valid], ref[-1][valid], rtol=1e-5, atol=1e-5)
    for b in range(2):  # every position, not just the sampled ones the runtime check reads
        x = rec.seen[("embed", -1)] if b == 0 else rec.seen[("resid_mlp", 0)]
        a, m, out = rec.seen[("attn", b)], rec.seen[("mlp", b)], rec.seen[("resid_mlp", b)]
        if "resid_attn" in absent:
            torch.testing.assert_close(x + a + m, out, rtol=1e-5, atol=1e-5)
        else:
            torch.testing.assert_close(x + a, rec.seen[("resid_attn", b)], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(rec.seen[("resid_attn", b)] + m, out, rtol=1e-5, atol=1e-5)


def _wrong(name, **change):
    model = tiny_families.build(name)
    right = architectures.for_config(model.config)
    return model, dataclasses.replace(right, name=f"{right.name} (wrong)", **change)


WRONG = {
    "gemma2 wired as llama": ("gemma2", dict(attn_post_norm=None, mlp_post_norm=None,
                                             norm_mlp="post_attention_layernorm")),
    "parallel gpt_neox wired as sequential": ("gpt_neox-parallel", dict(parallel=False)),
    "parallel gptj wired as sequential": ("gptj", dict(parallel=False)),
    "sequential stablelm wired as parallel": ("stablelm-sequential", dict(parallel=True)),
    "falcon without the clone": ("falcon-40b", dict(clone=())),
    "granite without its multiplier": ("granite", dict(residual_scale=None)),
    "bloom with whole-module contributions": ("bloom", dict(attn="self_attention", mlp="mlp")),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_a_wrong_declaration_fails_the_residual_check_naming_family_and_block(case):
    name, change = WRONG[case]
    model, wrong = _wrong(name, **change)
    before = _hooks(model)
    with pytest.raises(CaptureError) as err:
        _capture(model, wrong)
    assert str(err.value).startswith(f"{wrong.name} block 0:"), str(err.value)
    assert "generator/architectures/" in str(err.value)
    assert _hooks(model) == before


def test_a_flattened_output_not_declared_fails_with_its_shape():
    model, wrong = _wrong("opt", flattened=())
    with pytest.raises(CaptureError, match=r"opt \(wrong\) block 0: `resid_attn` has shape \(51, 32\)"):
        _capture(model, wrong)


def test_a_module_path_the_model_lacks_fails_before_any_hook():
    model, wrong = _wrong("olmo2", norm_attn="input_layernorm")
    with pytest.raises(CaptureError, match=r"olmo2 \(wrong\) block 0: declared norm_attn "
                                           r"'input_layernorm' is not a module there"):
        Capture(model, wrong, [Recorder()])
    assert _hooks(model) == 0


@pytest.mark.parametrize("name", sorted(tiny_families.REFUSED))
def test_non_additive_layouts_are_refused_with_why_and_fix(name):
    cfg = tiny_families.config(name, tiny_families.REFUSED)
    with pytest.raises(ModelLoadError) as err:
        architectures.for_config(cfg, "m")
    cause, fix = str(err.value).split("\n  fix: ")
    assert cause.startswith("m: ") and "is not supported" in cause
    assert tiny_families.REFUSED[name][2] in cause and fix


def test_multimodal_gemma3_is_refused_with_the_way_to_its_text_model():
    from transformers import Gemma3Config

    with pytest.raises(ModelLoadError) as err:
        architectures.for_config(Gemma3Config(), "g")
    assert "vision-language" in str(err.value) and "language_model.save_pretrained" in str(err.value)


def test_every_family_has_a_tiny_model_here():
    covered = {architectures.for_config(tiny_families.config(n)).name for n in tiny_families.VARIANTS}
    assert covered == {f.name for f in architectures.families()}


@pytest.mark.parametrize("change", [dict(pos_embed="wpe"), dict(clone=("resid_mlp",)),
                                    dict(position_scheme="sinusoidal")])
def test_an_inconsistent_declaration_is_refused_when_declared(change):
    with pytest.raises(AtlasError, match="architecture 'x'"):
        architectures.Architecture(name="x", model_types=("x",), **change)
