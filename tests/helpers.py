"""Builders for tiny random models (never presented as results) and tiny GGUF files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from generator.models import LoadedModel, ModelSpec


class ByteTokenizer:
    """A minimal tokenizer over 256 byte ids plus BOS/EOS, enough for inputs on tiny models."""

    def __init__(self, vocab_size: int = 258) -> None:
        self.vocab_size = vocab_size
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 256, 257, None

    def __len__(self) -> int:
        return self.vocab_size

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t.encode("utf-8")) for t in texts]}

    def encode(self, text, add_special_tokens=False):
        return list(text.encode("utf-8"))

    def convert_ids_to_tokens(self, ids):
        return [chr(i) if 32 <= i < 127 else f"<{i}>" for i in ids]

    def decode(self, ids):
        return "".join(self.convert_ids_to_tokens(list(ids)))

    def get_vocab(self):
        return {chr(i) if 32 <= i < 127 else f"<{i}>": i for i in range(self.vocab_size)}


def padded_ids(n: int, t: int, seed: int, pads: dict[int, int]):
    """Random byte ids (n, t) and a mask with row r padded from position pads[r] on."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (n, t), generator=gen)
    mask = torch.ones(n, t, dtype=torch.bool)
    for row, start in pads.items():
        mask[row, start:] = False
    return ids, mask


def every_reducer_kind():
    """One reducer of every kind (two means, two covariances) on a 2-block, width-32 model's
    attention, MLP and block outputs, for 10 samples of 12 tokens."""
    from generator.capture.sites import all_sites
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState
    from generator.reducers.norms import NormStats
    from generator.reducers.reservoir import Reservoir
    from generator.reducers.sample_norms import SampleNorms

    sites = [s for s in all_sites(2) if s.point in ("attn", "mlp", "resid_mlp")]
    return [NormStats(sites, 12), MeanState(sites, 32, keep=("site", "position"), seq_len=12),
            MeanState(sites, 32, keep=("sample",), max_samples=8), Covariance(sites, 32),
            Covariance(sites, 32, unit=True, every=2, min_position=1),
            Reservoir(sites, 32, k=40, seed=5), SampleNorms(sites, 10, 12)]


def tiny_gpt2(n_layer: int = 2, n_embd: int = 32, seed: int = 0):
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=261, n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=4,
                     bos_token_id=256, eos_token_id=257)
    return GPT2Model(cfg).eval()


def tiny_llama(n_layer: int = 2, hidden: int = 32, seed: int = 0):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=261, hidden_size=hidden, intermediate_size=64,
                      num_hidden_layers=n_layer, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, bos_token_id=256, eos_token_id=257)
    return LlamaModel(cfg).eval()


def loaded(model, name: str = "tiny") -> LoadedModel:
    spec = ModelSpec(name=name, path="(built in memory by the test)")
    return LoadedModel(spec, model, ByteTokenizer(), {"model": name, "random": True})


def write_tiny_gguf(path: Path, model) -> Path:
    """Write a tiny LLaMA as GGUF the way llama.cpp's converter does (q/k rows permuted)."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"] if hasattr(cfg, "rope_parameters")
                         and cfg.rope_parameters else 10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(0)
    tokens, merges = _byte_bpe_vocab(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.vocab_size - 2)
    w.add_eos_token_id(cfg.vocab_size - 1)

    def perm(t: torch.Tensor, heads: int) -> np.ndarray:
        t = t.detach().numpy()
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(
            t.shape)

    sd = model.state_dict()
    w.add_tensor("token_embd.weight", sd["embed_tokens.weight"].numpy())
    w.add_tensor("output_norm.weight", sd["norm.weight"].numpy())
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"].numpy())
        w.add_tensor(f"blk.{i}.attn_q.weight",
                     perm(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight",
                     perm(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"].numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _byte_bpe_vocab(vocab_size: int) -> tuple[list[str], list[str]]:
    """GPT-2 style byte-level tokens: 256 byte symbols, a few merges, then BOS and EOS."""
    symbols = list(bytes_to_unicode().values())
    merges = [f"{a} {b}" for a, b in [("t", "h"), ("th", "e"), ("a", "n")]]
    extra = ["th", "the", "an"]
    tokens = symbols + extra
    tokens = tokens[: vocab_size - 2] + ["<s>", "</s>"]
    return tokens, merges[: max(0, vocab_size - 2 - 256)]


def save_tiny_folder(path: Path, model) -> Path:
    """Save a tiny model with a real byte-level BPE tokenizer, as a hub snapshot folder would be."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    tokens, merges = _byte_bpe_vocab(model.config.vocab_size)
    tk = Tokenizer(tk_models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                 merges=[tuple(m.split()) for m in merges]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(path)
    model.save_pretrained(path)
    return path


def write_suite(path: Path, models: list[dict], extra: str = "") -> Path:
    """A small suite file for runner tests: short windows, few samples, small vocabulary run."""
    lines = ['seed = 7', '[inputs]', 'n_samples = 6', 'seq_len = 24', 'batch_size = 4',
             '[inputs.repeat]', 'tokens = ["a", "b"]', 'seq_len = 12',
             '[inputs.singular]', 'max_tokens = 64', 'batch_size = 32',
             '[capture]', 'points_per_site = 30', 'max_chart_points = 100',
             '[experiments.attn_vs_mlp]', 'umap_points = 200', 'umap_neighbors = 8']
    for m in models:
        lines.append("[[models]]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in m.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def fake_context(n_blocks: int = 6, d_model: int = 16, seq_len: int = 32, n_samples: int = 24,
                 seed: int = 3, **capture):
    """A Context for driving an experiment's compute with synthetic states (no model needed)."""
    from generator.experiment import Context
    from generator.suite import CaptureOptions

    modes = ("text", "repeat", "singular")
    return Context(model_name="synthetic", n_blocks=n_blocks, d_model=d_model, seed=seed,
                   seq_len=dict.fromkeys(modes, seq_len), n_samples=dict.fromkeys(modes, n_samples),
                   tokenizer=ByteTokenizer(), model=None, architecture=None,
                   capture=CaptureOptions(**capture),
                   cov_matmul=capture.get("cov_matmul", "float32"),
                   input_labels={"repeat": [f"tok{i}" for i in range(n_samples)]},
                   valid_tokens=dict.fromkeys(modes, seq_len * n_samples))


def feed(reducers, n_blocks: int, n_samples: int, seq_len: int, make_h, batch_size: int = 4):
    """Stream synthetic states into reducers, as the capture hooks would.

    `make_h(site, samples, positions)` gets (B, T) global sample ids and positions and returns the
    (B, T, D) states of that site: a test plants the signal an experiment must find there.
    """
    from generator.capture.batch import Batch, State
    from generator.capture.sites import all_sites

    for start in range(0, n_samples, batch_size):
        ids = torch.arange(start, min(start + batch_size, n_samples))
        tokens = (ids[:, None] * 7 + torch.arange(seq_len)[None, :]) % 256
        batch = Batch(tokens, torch.ones(len(ids), seq_len, dtype=torch.bool), ids)
        for site in all_sites(n_blocks):
            wanting = [r for r in reducers if r.wants(site)]
            if wanting:
                state = State(site, make_h(site, batch.samples, batch.positions).float(), batch)
                for r in wanting:
                    r.update(state)
        for r in reducers:
            end = getattr(r, "end_batch", None)
            if end is not None:
                end()


def run_planted(exp, ctx, make_h, params=None, mode="text"):
    """An experiment's real needs -> reducers fed planted states -> its real compute."""
    params = params or exp.params()
    needs = exp.needs(ctx, params)
    for m, reducers in needs.items():
        feed(list(reducers.values()), ctx.n_blocks, ctx.n_samples[m], ctx.seq_len[m], make_h)
    return exp.compute(ctx, params, needs)


def only_experiments(path: Path, keep: tuple[str, ...]) -> Path:
    """Disable every experiment of a `write_suite` file but `keep`: runner tests that need no more."""
    from generator.experiment import registry

    text = path.read_text()
    for name in registry():
        header = f"[experiments.{name}]\n"
        if name in keep:
            continue
        if header in text:
            text = text.replace(header, header + "enabled = false\n")
        else:
            text += f"\n{header}enabled = false\n"
    path.write_text(text)
    return path


def spy_regrow(monkeypatch) -> list[bool]:
    """Record every `Covariance.regrow` answer (True: a shard was run again with more rows)."""
    from generator.reducers.covariance import Covariance

    grown: list[bool] = []
    orig = Covariance.regrow

    def spy(self):
        grown.append(orig(self))
        return grown[-1]

    monkeypatch.setattr(Covariance, "regrow", spy)
    return grown
