"""A seeded, sharding-invariant sample of labelled token states (scatters, UMAP, probes)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator.capture.batch import Batch, State, to_device, token_hash_np
from generator.capture.sites import Site
from generator.reducers import spill
from generator.reducers.base import Reducer


class Reservoir(Reducer):
    """A seeded sample of `k` labelled token states: the `k` smallest hash keys over all seen.

    Keys depend only on (seed, site, sample, position), so the sample is the same whatever the
    batching or sharding, and merging two reservoirs is exactly a reservoir of the union (a
    (key, site) pair offered twice, as by overlapping shards, is kept once). Candidates under
    the current threshold are buffered and taken in once the buffer passes `k / 2` rows. With
    `population` (the number of (site, token) pairs the whole run will offer) the threshold
    starts where `k + 10 sqrt(k) + 30` keys are expected below it instead of at the top: every
    shard skips nearly all tokens from its first batch, and the result is still exactly the k
    smallest keys unless a binomial with that mean falls below k, over 6 standard deviations
    away for every k (about 10 for k in the thousands, as the suite uses).

    Rows live in `k` fixed slots, allocated once and reused (on the capture device while a shard
    runs, on the host for the run's total): taking rows in copies only the rows that enter into
    the slots of those that leave, so a merge never allocates a new k-row block (on this
    machine a fresh 100 MB block cost up to a quarter of a second in page faults). The sorted
    form (`state`, `arrays()`) is made when it is read.
    """

    kind = "reservoir"
    PIECE_BYTES = 16 << 20
    """Rows gathered at a time when rows enter the slots: below the CLI's 32 MB mmap threshold,
    so from the heap and reused (no page faults), and few pieces (each is two operators)."""
    LABELS = ("key", "depth", "block", "sample", "position", "token")
    KEY_SPACE = 1 << 62
    CAN_SPILL = True
    """A run's total keeps its rows in a file between merges (`spill.mapped`): in memory its k
    rows (29 MB at GPT-2-small's k = 9,600, 157 MB at LLaMA-7B's width) sat under every later
    shard's forwards; mapped, only the pages a merge writes are touched, while it does."""
    _rows_file: Path | None = None
    """Where a run's total keeps its rows between merges (`spill_to`); None: in memory."""

    def __init__(self, sites: Iterable[Site], d_model: int, k: int, seed: int,
                 population: int = 0) -> None:
        super().__init__(sites)
        self.k, self.seed, self.d_model = k, seed, d_model
        self.params = {"d_model": d_model, "k": k, "seed": seed, "population": population}
        self._state = {"vectors": np.zeros((0, d_model), np.float32),
                       **{name: np.zeros(0, np.int64) for name in self.LABELS}}
        expected = k + 10 * k ** 0.5 + 30
        start = self.KEY_SPACE * min(1.0, expected / population) if population else self.KEY_SPACE
        self._threshold = int(start)
        self._pending: list[dict[str, np.ndarray]] = []
        self._vec_pending: list[torch.Tensor] = []
        self._pending_rows = 0
        self._slots: torch.Tensor | None = None
        """(k, d) float32 rows, in no particular order; the first `_used` are filled."""
        self._lab = {name: np.zeros(k, np.int64) for name in self.LABELS}
        self._used = 0
        self._sorted = True
        """`_state` is the sorted form of the slots."""
        self._batch: Batch | None = None
        self._cand: dict[str, Any] = {}

    def nbytes(self) -> int:
        """The state once full (it starts empty): k float32 rows and their labels."""
        return self.k * (4 * self.d_model + 8 * len(self.LABELS))

    def update(self, state: State) -> None:
        """Gather this site's candidates into the batch's row buffer: one row gather, no sync.

        Which tokens are candidates depends only on the hash keys, so it is decided on the host
        (numpy, from the batch's ids), for every site of the batch at once (`_candidates`); the
        rows of all sites land in one buffer, taken in as one chunk.
        """
        b = state.batch
        self.begin_batch(b)  # nothing to do after the batch's first site (or its `begin_batch`)
        cand = self._cand
        i = self.index[(state.site.point, state.site.block)]
        lo, hi = int(cand["starts"][i]), int(cand["starts"][i + 1])
        cand["arrived"].append(i)
        if hi == lo:
            return
        h = state.flat
        rows, part = cand["rows"][lo:hi], cand["device"][lo:hi]
        if h.dtype == rows.dtype:
            torch.index_select(h, 0, part, out=rows)
        else:
            rows.copy_(h.index_select(0, part))

    def begin_batch(self, b: Batch) -> None:
        """Before the forward: the batch's candidates and their row buffer (see `update`).

        Made here rather than at the batch's first site: a buffer made during the forward, and
        kept past it, splits a hole its freed temporaries left in the heap.
        """
        if b is not self._batch:
            self.end_batch()
            self._candidates(b)

    def _candidates(self, b: Batch) -> None:
        """Every (site, token) of the batch whose hash key is under the threshold.

        Labels grouped by site (`starts`), and the flat token indices on the device (one copy).
        """
        self._batch = b
        t = b.np_mask.shape[1]
        depth = np.array([s.depth for s in self.sites], np.int64)
        keys = token_hash_np(b.np_sample_ids[None, :, None], np.arange(t)[None, None, :],
                             (self.seed * 100_003 + depth)[:, None, None])
        site, flat = np.nonzero((b.np_mask[None] & (keys < self._threshold)).reshape(len(depth), -1))
        block = np.array([s.block for s in self.sites], np.int64)
        self._cand = {
            "starts": np.searchsorted(site, np.arange(len(depth) + 1)),
            "device": b.to_device(flat), "key": keys.reshape(len(depth), -1)[site, flat],
            "depth": depth[site], "block": block[site], "sample": b.np_sample_ids[flat // t],
            "position": flat % t, "token": b.np_input_ids.reshape(-1)[flat].astype(np.int64),
            "arrived": []}
        self._cand["rows"] = torch.empty(len(flat), self.d_model, dtype=torch.float32,
                                         device=b.device)

    def end_batch(self) -> None:
        self._queue_batch()
        if self._pending_rows > max(self.k // 2, 64):
            self._absorb_pending()

    def _queue_batch(self) -> None:
        """Queue the batch's rows of the sites that came (all of them, but for a short forward)."""
        cand, self._batch, self._cand = self._cand, None, {}
        if cand and cand["arrived"]:
            labels = {k: cand[k] for k in self.LABELS}
            rows = cand["rows"]
            if len(cand["arrived"]) < len(self.sites):
                starts = cand["starts"]
                take = np.concatenate([np.arange(starts[i], starts[i + 1])
                                       for i in sorted(set(cand["arrived"]))])
                labels = {k: v[take] for k, v in labels.items()}
                with torch.inference_mode():
                    rows = rows.index_select(0, _index(take, rows.device))
            if len(rows):
                self._pending.append(labels)
                self._vec_pending.append(rows)
                self._pending_rows += len(rows)

    def _absorb_pending(self) -> None:
        self._queue_batch()
        if self._pending:
            labels = {k: np.concatenate([p[k] for p in self._pending]) for k in self.LABELS}
            self._insert(labels, self._vec_pending)
            self._pending, self._vec_pending, self._pending_rows = [], [], 0

    def _insert(self, labels: dict[str, np.ndarray], chunks: list[torch.Tensor]) -> None:
        """Keep the k smallest (key, depth) of the slots and `labels` (rows: `chunks`, in order).

        Only the keys are sorted (on the host); the rows that enter are copied into the slots of
        the rows that leave (or free ones), chunk by chunk.
        """
        used = self._used
        key = np.concatenate([self._lab["key"][:used], labels["key"]])
        depth = np.concatenate([self._lab["depth"][:used], labels["depth"]])
        order = np.lexsort((depth, key))
        same = (key[order[1:]] == key[order[:-1]]) & (depth[order[1:]] == depth[order[:-1]])
        if same.any():  # offered twice (overlapping shards): the copy already held stays
            order = np.concatenate([order[:1], order[1:][~same]])
        keep = order[: self.k]
        enter = np.sort(keep[keep >= used] - used)  # in row order: see `_copy_rows`
        if len(enter):
            kept_old = np.zeros(used, bool)
            kept_old[keep[keep < used]] = True
            free = np.concatenate([np.flatnonzero(~kept_old), np.arange(used, self.k)])
            slots = free[: len(enter)]
            for name in self.LABELS:
                self._lab[name][slots] = labels[name][enter]
            self._copy_rows(slots, enter, chunks)
            self._used, self._sorted = len(keep), False
        if self._used >= self.k:
            self._threshold = int(key[keep[-1]])

    def _copy_rows(self, slots: np.ndarray, enter: np.ndarray, chunks: list[torch.Tensor]) -> None:
        """slots[i] <- row enter[i] of the chunks taken as one (no concatenated copy is made).

        Both ascending (slots are in no particular order, so the rows that enter take the free
        ones in row order; a run of both is one slice copy). Rows are gathered `PIECE_BYTES` at a
        time: a gather of them all at once makes a new block of entering rows x d, which above
        glibc's mmap threshold is fresh pages every time (24,000 rows of SmolLM2: 16 ms, of
        which 13.5 are page faults; 2.5 ms into reused memory, measured). In inference mode: the
        slots and chunks may be inference tensors (made during capture).
        """
        with torch.inference_mode():
            if self._slots is None:
                self._slots = torch.empty(self.k, self.d_model, device=chunks[0].device)
            dev = self._slots.device
            step = (max(1, self.PIECE_BYTES // (4 * self.d_model)) if dev.type == "cpu"
                    else len(enter))  # a GPU's caching allocator reuses its blocks anyway
            ends = np.cumsum([len(c) for c in chunks])
            which = np.searchsorted(ends, enter, side="right")
            for j in np.unique(which):
                sel = which == j
                rows, dst = enter[sel] - (ends[j - 1] if j else 0), slots[sel]
                if _is_run(rows) and _is_run(dst):
                    self._slots[dst[0]:dst[-1] + 1].copy_(chunks[j][rows[0]:rows[-1] + 1])
                    continue
                for a in range(0, len(rows), step):
                    src = chunks[j].index_select(0, _index(rows[a:a + step], chunks[j].device))
                    self._slots.index_copy_(0, _index(dst[a:a + step], dev),
                                            src.to(dev, torch.float32))

    def _fold(self) -> None:
        """Take in pending rows; build the sorted form if it is out of date."""
        self._restore()
        self._absorb_pending()
        if not self._sorted:
            u = self._used
            order = np.lexsort((self._lab["depth"][:u], self._lab["key"][:u]))
            with torch.inference_mode():
                vec = self._slots[:u].index_select(0, _index(order, self._slots.device))  # type: ignore[index]
            self._state = {"vectors": vec.cpu().numpy(),
                           **{k: self._lab[k][:u][order] for k in self.LABELS}}
            self._sorted = True

    def merge(self, other: Reducer, consume: bool = False) -> None:
        """Take in `other`'s rows, its slots and its pending rows alike: only keys are sorted.

        The pending rows go straight into these slots, not into `other`'s first: a shard
        reducer whose pending rows never reached `k / 2` (the runner's four-batch shards of a
        long run) then never allocates slots of its own. Taken into its slots at the merge,
        they made a k-row block (29 MB at GPT-2-small's k = 9,600) live in the heap through
        every later shard's forwards, holding nothing between merges; with the total's own
        slots, made at the same merge, the capture's peak RSS rose 100-150 MB from the first
        shard to the second (bench, 48 x 1024 GPT-2-small, shards measured one by one). The
        k smallest keys of the union are the same either way.
        """
        assert isinstance(other, Reservoir)
        other._restore()
        other._queue_batch()
        u = other._used
        held = [{k: other._lab[k][:u] for k in self.LABELS}] if u else []
        parts = held + other._pending
        if parts:
            self._take({k: np.concatenate([p[k] for p in parts]) for k in self.LABELS},
                       ([other._slots[:u]] if u else []) + other._vec_pending)  # type: ignore[index]

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        self._take({k: np.asarray(b[k], np.int64) for k in self.LABELS},
                   [torch.from_numpy(np.ascontiguousarray(b["vectors"], np.float32))])

    def _take(self, labels: dict[str, np.ndarray], chunks: list[torch.Tensor]) -> None:
        """Merge labelled rows from elsewhere (`chunks`, in label order).

        A run's total keeps its slots on the host, or in their file (`spill_to`), mapped only
        while the entering rows are copied in.
        """
        self._absorb_pending()
        if len(labels["key"]):
            self._open_total_slots()
            self._insert(labels, chunks)
            if self._rows_file is not None:
                self._slots = None  # unmapped: the rows wait in the file (the page cache)

    def spilled_nbytes(self) -> int:
        """The rows go to disk; their labels (8 bytes each per row) stay in memory."""
        return self.k * 4 * self.d_model

    def _open_total_slots(self) -> None:
        """The total's slots for a merge: mapped from their file, made there, or in memory."""
        if self._slots is not None:
            return
        shape = (self.k, self.d_model)
        if self._rows_file is not None:
            self._slots = torch.from_numpy(spill.mapped(self._rows_file, shape))
            return
        path = self._spill_path("rows")
        if path is not None:
            try:
                self._slots = torch.from_numpy(spill.mapped(path, shape, create=True))
                self._rows_file = path
                return
            except OSError as exc:
                self._spill_refused("reservoir rows", exc)
        self._slots = torch.empty(shape)

    def _restore(self) -> None:
        """Bring a total's rows back from their file into memory (reading it calls this)."""
        path = self._rows_file
        if path is None:
            return
        u = self._used
        try:
            slots = torch.empty(self.k, self.d_model)
            slots[:u] = torch.from_numpy(np.asarray(spill.mapped(path, (self.k, self.d_model))[:u]))
        except OSError as exc:
            raise spill.lost(path, "sampled states", exc) from exc
        self._slots, self._rows_file = slots, None
        path.unlink(missing_ok=True)

    def _discard_rows_file(self) -> None:
        if self._rows_file is not None:
            self._slots = None
            self._rows_file.unlink(missing_ok=True)
            self._rows_file = None

    def reset(self) -> None:
        """Empty again; the row slots are kept (reused by the next shard)."""
        self._discard_rows_file()
        slots = self._slots
        super().reset()
        self._slots = slots

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self._discard_rows_file()
        self._pending, self._vec_pending, self._pending_rows = [], [], 0
        self._state = {k: np.asarray(arrays[k], dtype=self._state[k].dtype) for k in self._state}
        u = len(self._state["key"])
        self._used, self._sorted = u, True
        for k in self.LABELS:
            self._lab[k][:u] = self._state[k]
        self._slots = torch.empty(self.k, self.d_model)
        self._slots[:u] = torch.from_numpy(self._state["vectors"])
        if u >= self.k:
            self._threshold = int(self._state["key"][-1])


def _is_run(a: np.ndarray) -> bool:
    """Ascending distinct integers without a gap (a slice), as `_copy_rows` gets them."""
    return bool(len(a)) and int(a[-1]) - int(a[0]) == len(a) - 1


def _index(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return to_device(np.asarray(a, np.int64), device)
