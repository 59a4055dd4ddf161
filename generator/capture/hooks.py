"""Hooks that stream every capture point of a forward pass into reducers.

Nothing is copied to the CPU or kept past its block: each state is handed to the reducers that
asked for it while the forward runs. Which module gives which point comes from the family's
declaration (`generator/architectures/`), resolved by `wiring`; this module knows no family.
The residual points are the model's own tensors (the mid-block residual is the input of the
MLP-side norm, the block output is the very tensor `output_hidden_states` reports), so no extra
additions are paid. On every batch they are checked against the rebuild from the contributions
(input + attention, + MLP; input + attention + MLP in a parallel block) at every
`CHECK_EVERY`-th position: a declaration that hooks the wrong modules is wrong at every token,
and fails loudly. Points a block does not have (`resid_attn` of a parallel block) are never
emitted: a reducer that wants them receives nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from generator.architectures import Architecture
from generator.capture.batch import Batch, State
from generator.capture.check import check_residual, residual_gap
from generator.capture.sites import Site, all_sites
from generator.capture.vector_math import settle_vector_math
from generator.capture.wiring import Tap, resolve
from generator.errors import CaptureError


class Sink(Protocol):
    """What the capture feeds: `update` per wanted site, during the forward.

    Optional too: `begin_batch(batch)`, called before each forward (allocate there what the
    batch keeps), and `end_batch()`, after it.
    """

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
    deferred: bool = False
    """Residual check without waiting for the device: each block's gap stays on the device, and
    `verify()` (the executor calls it once per shard) reads one flag; if it is set, the shard's
    batches are run again with the immediate check, which raises the usual error. With False,
    every block is checked as it runs (one host sync per block)."""
    checks: int = field(default=0, init=False)
    CHECK_EVERY = 8

    def __post_init__(self) -> None:
        self.wiring = resolve(self.adapter, self.model)
        self.n_blocks = len(self.wiring.blocks)
        self.sites = all_sites(self.n_blocks)
        self._routes = {(s.point, s.block): (s, [k for k in self.sinks if k.wants(s)])
                        for s in self.sites}
        wanted = [s.block for s in self.sites if self._routes[(s.point, s.block)][1]]
        self.last_block = max(wanted, default=-1)
        """Blocks after this one are not run (`norm_final` sits at block `n_blocks`)."""
        w = self.wiring
        self._plan = [(p, "mlp_in" if p == "resid_attn" else p, p in w.flattened)
                      for p in w.points[:-1]]  # resid_mlp is the block's output
        """(point, tapped key, flattened) per block point. `mlp_in`, the MLP branch's input, is
        the mid-block residual of a sequential block; a parallel block keeps it for the check."""
        if w.parallel:
            self._plan.append(("mlp_in", "mlp_in", "resid_attn" in w.flattened))
        self._handles: list[Any] = []
        self._batch: Batch | None = None
        self._gaps: torch.Tensor | None = None
        """(blocks, 2) float64: each block's deferred check (gap, scale), written in place."""
        self._n_gaps = 0
        self._norms: torch.Tensor | None = None
        """(sites, B, T) float32: every state's token norms (`State.norms2d`), in place."""
        self._bad: torch.Tensor | None = None
        self._unverified: list[Batch] = []
        self._replay = False
        self._block: dict[str, torch.Tensor] = {}

    def _emit(self, point: str, block: int, h: torch.Tensor) -> None:
        site, sinks = self._routes[(point, block)]
        if sinks and not self._replay:
            norms = self._norms[site.depth] if self._norms is not None else None
            state = State(site, h, self._batch, norms)  # type: ignore[arg-type]
            for sink in sinks:
                sink.update(state)

    def _tap(self, tap: Tap) -> Any:
        outputs, input_point, clone = tuple(tap.outputs), tap.input, tap.clone

        def hook(_module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if outputs:
                h = _first(output)
                if clone:  # the model adds into this tensor in place after we saw it
                    h = h.clone()
                for point in outputs:
                    self._block[point] = h
            if input_point is not None:
                self._block[input_point] = args[0] if args else next(iter(kwargs.values()))
        return hook

    def _block_input(self, i: int) -> Any:
        def hook(_module: Any, args: tuple, kwargs: dict) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            self._block = {"input": h}
            if i == 0:
                self._emit("embed", -1, h)
        return hook

    def _states(self, i: int, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The block's points as (B, T, d) tensors, contributions scaled as the block adds them."""
        w, got = self.wiring, self._block
        shape = got["input"].shape
        states = {}
        for point, key, flat in self._plan:
            h = got.get(key)
            if h is None:
                raise CaptureError(f"{w.family} block {i}", f"no module gave `{point}` during the "
                                   "block's forward (the declared module never ran)",
                                   f"the `{w.family}` declaration in generator/architectures/ "
                                   "does not match this model")
            if flat and h.dim() == 2 and h.shape[0] == shape[0] * shape[1]:
                h = h.view(shape)
            if h.shape != shape:
                raise CaptureError(f"{w.family} block {i}", f"`{point}` has shape {tuple(h.shape)}, "
                                   f"the block input {tuple(shape)}",
                                   "name the point in the declaration's `flattened` if its module "
                                   "flattens tokens to (B*T, d); otherwise fix the module path")
            states[point] = h
        if w.scale != 1.0:
            states["attn"], states["mlp"] = states["attn"] * w.scale, states["mlp"] * w.scale
        states["resid_mlp"] = out
        return states

    def _block_output(self, i: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            states = self._states(i, _first(output))
            if self.deferred and not self._replay:
                err, scale, _ = residual_gap(self._block["input"], states, self.CHECK_EVERY)
                row = self._gaps[self._n_gaps]  # type: ignore[index]
                row[0].copy_(err)
                row[1].copy_(scale)
                self._n_gaps += 1
            else:
                check_residual(f"{self.wiring.family} block {i}", self._block["input"], states,
                               self.rtol, self.CHECK_EVERY)
            self.checks += 1
            states.pop("mlp_in", None)
            for point, h in states.items():
                self._emit(point, i, h)
            self._block = {}
            if i >= self.last_block and i < self.n_blocks - 1:
                raise _StopForward
        return hook

    def _final(self, _module: Any, _args: Any, output: Any) -> None:
        self._emit("norm_final", self.n_blocks, _first(output))

    def __enter__(self) -> Capture:
        settle_vector_math()  # before the first forward: its first call must not race
        w = self.wiring
        for i, block in enumerate(w.blocks):
            self._handles.append(block.register_forward_pre_hook(self._block_input(i),
                                                                 with_kwargs=True))
            for tap in w.taps[i]:
                self._handles.append(tap.module.register_forward_hook(self._tap(tap),
                                                                      with_kwargs=True))
            self._handles.append(block.register_forward_hook(self._block_output(i)))
        self._handles.append(w.norm_final.register_forward_hook(self._final))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, batch: Batch) -> None:
        """One forward pass of the base model; the hooks do the rest.

        What the hooks keep until the batch ends (every state's norms, each block's deferred
        check, the sinks' per-batch buffers: `begin_batch`) is allocated here, before the
        forward, into buffers reused while the batch shape stays. Small tensors made during
        the forward and kept past the block that made them split the holes the forward's
        freed temporaries leave in the heap: its next temporaries then take fresh pages at the
        heap's top (glibc), which is trimmed when the batch ends, and the heap grew with every
        block. On SmolLM2 4 x 512 that was up to 700 MB of heap growth and 180k page faults
        per batch (strace, `mallinfo2` per block, getrusage), and the capture's peak RSS (32 x
        1024 GPT-2-small) 150 MB higher.
        """
        self._batch, self._n_gaps = batch, 0  # a forward that raised left its gaps behind
        shape = (len(self.sites), *batch.input_ids.shape)
        try:
            with torch.inference_mode():
                if self._norms is None or self._norms.shape != shape:
                    self._norms = torch.empty(shape, device=batch.device)
                if self.deferred and self._gaps is None:
                    self._gaps = torch.empty(self.n_blocks, 2, dtype=torch.float64,
                                             device=batch.device)
                for sink in () if self._replay else self.sinks:
                    begin = getattr(sink, "begin_batch", None)
                    if begin is not None:
                        begin(batch)
                self.model(input_ids=batch.input_ids, attention_mask=batch.mask.long(),
                           use_cache=False)
        except _StopForward:
            pass
        finally:
            self._batch = None
        with torch.inference_mode():
            if self._n_gaps:  # a few ops per batch; read only by `verify`
                err, scale = self._gaps[:self._n_gaps].unbind(1)  # type: ignore[index]
                bad = (~(err <= self.rtol * scale)).any()  # NaN counts as bad
                self._bad = bad if self._bad is None else self._bad | bad
                self._n_gaps = 0
                self._unverified.append(batch)
            for sink in () if self._replay else self.sinks:
                end = getattr(sink, "end_batch", None)
                if end is not None:
                    end()

    def verify(self) -> None:
        """Read the deferred residual check (one host sync); raise as the immediate check would.

        On a failure the batches since the last `verify` are run again, feeding no sink, with
        the per-block check, so the error names the family, block and gap exactly as before.
        """
        bad, batches = self._bad, self._unverified
        self._bad, self._unverified = None, []
        if bad is None or not bool(bad):
            return
        self._replay = True
        try:
            for b in batches:
                self.run(b)
        finally:
            self._replay = False
        raise CaptureError(f"{self.wiring.family}", "the residual rebuilt from the captured "
                           "contributions differed from the model's own in a deferred check, but "
                           "not when the batch was run again (non-deterministic model or hooks)",
                           "check the architecture declaration in generator/architectures/ and "
                           "any other hooks on the model")
