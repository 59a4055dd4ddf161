"""Hooks that stream every capture point of a forward pass into reducers.

Nothing is copied to the CPU or kept past its block: each state is handed to the reducers that
asked for it while the forward runs. The residual points are the model's own tensors (the MLP
norm's input, and the block's output, the very tensor `output_hidden_states` reports), so no
extra additions are paid. On every batch they are checked against the paper's rebuild (block
input + attention output, + MLP output) at every `CHECK_EVERY`-th position: an adapter that
hooks the wrong modules is wrong at every token, and fails loudly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import torch

from generator.adapters import Adapter
from generator.errors import CaptureError
from generator.points import Site, all_sites


@dataclass
class Batch:
    """Token ids (B, T), a validity mask (padding is False) and each row's global sample index."""

    input_ids: torch.Tensor
    mask: torch.Tensor
    sample_ids: torch.Tensor

    @cached_property
    def flat_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample id, position) of every valid token, in row-major order."""
        rows, cols = self.mask.nonzero(as_tuple=True)
        return self.sample_ids[rows], cols

    @cached_property
    def positions(self) -> torch.Tensor:
        """(B, T) position of every slot."""
        b, t = self.mask.shape
        return torch.arange(t, device=self.mask.device).expand(b, t)

    @cached_property
    def samples(self) -> torch.Tensor:
        """(B, T) global sample id of every slot."""
        return self.sample_ids.unsqueeze(1).expand(self.mask.shape)

    @cached_property
    def fmask(self) -> torch.Tensor:
        """(B, T) mask as float32: multiplying by it zeroes padding in dense reductions."""
        return self.mask.float()

    def subsample(self, every: int, min_position: int) -> torch.Tensor:
        """(B, T) mask of valid tokens from `min_position` on, in 1 of `every` hash buckets.

        The same for every site of the batch, so it is computed once per batch.
        """
        key = (every, min_position)
        if key not in self._subsamples:
            from generator.reducers import token_hash

            keep = self.mask & (self.positions >= min_position)
            if every > 1:
                keep &= token_hash(self.samples, self.positions, 0) % every == 0
            self._subsamples[key] = keep
        return self._subsamples[key]

    @cached_property
    def _subsamples(self) -> dict[tuple[int, int], torch.Tensor]:
        return {}

    @cached_property
    def full(self) -> bool:
        """No padding in this batch (packed text, repeats, single tokens): masks can be skipped."""
        return bool(self.mask.all())


@dataclass
class State:
    """One captured tensor (B, T, D) with views computed once and shared by all reducers.

    Reducers work on the dense (B, T, ...) grid with the mask as weights where they can: no
    copy of the valid rows is made unless one asks for `rows`.
    """

    site: Site
    h: torch.Tensor
    batch: Batch

    @cached_property
    def rows(self) -> torch.Tensor:
        """Valid tokens only, (N, D): padding never reaches a statistic."""
        return self.h[self.batch.mask]

    @cached_property
    def norms2d(self) -> torch.Tensor:
        """(B, T) L2 norm of every slot, zero at padding."""
        n = torch.linalg.vector_norm(self.h, dim=-1, dtype=torch.float32)
        return n if self.batch.full else n * self.batch.fmask

    @cached_property
    def norms(self) -> torch.Tensor:
        """L2 norm of every valid token, (N,)."""
        return self.norms2d[self.batch.mask]


class Sink(Protocol):
    def wants(self, site: Site) -> bool: ...

    def update(self, state: State) -> None: ...


class _StopForward(Exception):
    """Raised after the last block any sink wants: the rest of the forward would be wasted."""


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


@dataclass
class Capture:
    """Install hooks on `model` for the sites the sinks want; use as a context manager."""

    model: torch.nn.Module
    adapter: Adapter
    sinks: Sequence[Sink]
    rtol: float = 1e-4
    checks: int = field(default=0, init=False)
    CHECK_EVERY = 8

    def __post_init__(self) -> None:
        self.n_blocks = self.adapter.n_blocks(self.model)
        self.sites = all_sites(self.n_blocks)
        self._routes = {(s.point, s.block): (s, [k for k in self.sinks if k.wants(s)])
                        for s in self.sites}
        wanted = [s.block for s in self.sites if self._routes[(s.point, s.block)][1]]
        self.last_block = max(wanted, default=-1)
        """Blocks after this one are not run (`norm_final` sits at block `n_blocks`)."""
        self._handles: list[Any] = []
        self._batch: Batch | None = None
        self._block: dict[str, torch.Tensor] = {}

    def _emit(self, point: str, block: int, h: torch.Tensor) -> None:
        site, sinks = self._routes[(point, block)]
        if sinks:
            state = State(site, h, self._batch)  # type: ignore[arg-type]
            for sink in sinks:
                sink.update(state)

    def _keep(self, name: str) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            self._block[name] = _first(output)
        return hook

    def _keep_norm_mlp(self, _module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        """The MLP norm's input is the residual after attention (pre-norm blocks)."""
        h = args[0] if args else next(iter(kwargs.values()))
        self._block["resid_attn"], self._block["norm_mlp"] = h, _first(output)

    def _block_input(self, i: int) -> Any:
        def hook(_module: Any, args: tuple, kwargs: dict) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            self._block = {"input": h}
            if i == 0:
                self._emit("embed", -1, h)
        return hook

    def _block_output(self, i: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            got, out = self._block, _first(output)
            self._check(i, got, out)
            for point, h in (("norm_attn", got["norm_attn"]), ("attn", got["attn"]),
                             ("resid_attn", got["resid_attn"]), ("norm_mlp", got["norm_mlp"]),
                             ("mlp", got["mlp"]), ("resid_mlp", out)):
                self._emit(point, i, h)
            self._block = {}
            if i >= self.last_block and i < self.n_blocks - 1:
                raise _StopForward
        return hook

    def _final(self, _module: Any, _args: Any, output: Any) -> None:
        self._emit("norm_final", self.n_blocks, _first(output))

    def _check(self, i: int, got: dict[str, torch.Tensor], out: torch.Tensor) -> None:
        """Check input + attn == resid_attn and resid_attn + mlp == output, at sampled positions."""
        at = (slice(None), slice(None, None, self.CHECK_EVERY))
        inp, attn, mid, mlp, end = (t[at] for t in (got["input"], got["attn"], got["resid_attn"],
                                                    got["mlp"], out))
        err = torch.maximum((inp + attn - mid).abs().amax(), (mid + mlp - end).abs().amax())
        scale = end.abs().amax() + 1.0
        if not bool(err <= self.rtol * scale):
            raise CaptureError(
                f"block {i}",
                f"rebuilt residual (input + attn + mlp) differs from the block's own by "
                f"{float(err):.3g} (scale {float(scale):.3g})",
                "the adapter's module paths do not match this architecture, or another hook "
                "changes module outputs; check generator/adapters/ for this model_type",
            )
        self.checks += 1

    def __enter__(self) -> Capture:
        m, a = self.model, self.adapter
        for i in range(self.n_blocks):
            block = a.block(m, i)
            self._handles.append(block.register_forward_pre_hook(self._block_input(i),
                                                                 with_kwargs=True))
            for name in ("norm_attn", "attn", "mlp"):
                self._handles.append(a.module(m, name, i).register_forward_hook(self._keep(name)))
            self._handles.append(a.module(m, "norm_mlp", i).register_forward_hook(
                self._keep_norm_mlp, with_kwargs=True))
            self._handles.append(block.register_forward_hook(self._block_output(i)))
        self._handles.append(a.module(m, "norm_final").register_forward_hook(self._final))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, batch: Batch) -> None:
        """One forward pass of the base model; the hooks do the rest."""
        self._batch = batch
        try:
            with torch.inference_mode():
                self.model(input_ids=batch.input_ids, attention_mask=batch.mask.long(),
                           use_cache=False)
        except _StopForward:
            pass
        finally:
            self._batch = None
        with torch.inference_mode():
            for sink in self.sinks:
                end = getattr(sink, "end_batch", None)
                if end is not None:
                    end()


@contextlib.contextmanager
def capturing(model: torch.nn.Module, adapter: Adapter, sinks: Sequence[Sink]) -> Iterator[Capture]:
    with Capture(model, adapter, sinks) as cap:
        yield cap
