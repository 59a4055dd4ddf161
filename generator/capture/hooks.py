"""Hooks that stream every capture point of a forward pass into reducers.

Nothing is copied to the CPU or kept past its block: each state is handed to the reducers that
asked for it while the forward runs. The residual points are the model's own tensors (the MLP
norm's input, and the block's output, the very tensor `output_hidden_states` reports), so no
extra additions are paid. On every batch they are checked against the paper's rebuild (block
input + attention output, + MLP output) at every `CHECK_EVERY`-th position: an adapter that
hooks the wrong modules is wrong at every token, and fails loudly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from generator.architectures import Architecture
from generator.capture.batch import Batch, State
from generator.capture.check import check_residual
from generator.capture.sites import Site, all_sites


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
    adapter: Architecture
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
            check_residual(i, got, out, self.rtol, self.CHECK_EVERY)
            self.checks += 1
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
