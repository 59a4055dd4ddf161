"""What a build found: the artifacts read back as models, headline numbers and checked claims.

Shared by the renderer (pages) and the history (changelog), so a number means the same thing on
every page. Reads only artifact files: never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from generator.errors import AtlasError

ORDER = ("norms", "attn_vs_mlp", "layerwise", "positions", "pos_embed", "repeat", "vocab")
HEADLINES = (("norms", "pos0_norm_ratio", "position-0 norm ratio"),
             ("attn_vs_mlp", "attn_mlp_separability", "attn/MLP separability"),
             ("positions", "raw_evr_pc1", "position PC1 variance"),
             ("positions", "raw_cycles_pc1", "position PC1 cycles"),
             ("positions", "raw_periodicity", "position periodicity"),
             ("pos_embed", "wpe_periodicity", "learned-position periodicity"))
# (experiment, metric, threshold key in the suite's [claims], claim, what it needs). The paper
# finds periodic (helical) position components in GPT-2, whose positions are a learned table; a
# rotary model is not expected to show them, so there the claim reads "n/a", not "does not hold".
CLAIMS = (("norms", "pos0_norm_ratio", "pos0_norm_ratio_min",
           "position 0 norm is at least {t}x the median position in middle blocks", None),
          ("attn_vs_mlp", "attn_mlp_separability", "attn_mlp_separability_min",
           "attention and MLP outputs are linearly separable above {t} in middle blocks", None),
          ("pos_embed", "wpe_periodicity", "position_periodicity_min",
           "learned position components are periodic (power share above {t})", "pos_embed"),
          ("positions", "raw_periodicity", "position_periodicity_min",
           "residual position components are periodic (power share above {t})", "pos_embed"))


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def _json(p: Path) -> Any:
    return json.loads(p.read_text(encoding="utf-8"))


def load_build(artifacts: Path) -> dict[str, Any]:
    """Summary plus, per model, its status and every experiment the manifest vouches for."""
    summary_path = artifacts / "summary.json"
    if not summary_path.is_file():
        raise AtlasError(str(artifacts), "no summary.json: the suite has not been run here",
                         "run `python -m generator run` (or `make site`) first")
    summary = _json(summary_path)
    manifest = _json(artifacts / "manifest.json") if (artifacts / "manifest.json").is_file() else {}
    models = []
    for name in summary["models"]:
        status_path = artifacts / name / "status.json"
        status = _json(status_path) if status_path.is_file() else {
            "status": "skipped", "reason": "no status recorded"}
        prov = status.get("provenance", {})
        exps = {}
        for exp in ORDER:
            folder = artifacts / name / exp
            if f"{name}/{exp}" in manifest and (folder / "provenance.json").is_file():
                exps[exp] = {"folder": folder, "prov": _json(folder / "provenance.json"),
                             "metrics": _json(folder / "metrics.json"),
                             "run": _json(folder / "run.json") if (folder / "run.json").is_file()
                             else {}}
        models.append({"name": name, "status": status["status"], "reason": status.get("reason", ""),
                       "source": prov.get("id") or prov.get("source", "—"),
                       "ident": prov.get("revision") or prov.get("sha256") or "—",
                       "experiments": exps})
    return {"summary": summary, "models": models}


def headline_values(model: dict[str, Any]) -> dict[str, float | None]:
    """Label → value of each headline number this model has (missing ones are left out)."""
    out = {}
    for exp, metric, label in HEADLINES:
        e = model["experiments"].get(exp)
        if e and e["prov"].get("status") == "ok" and metric in e["metrics"]:
            out[label] = e["metrics"][metric]["value"]
    return out


def claims_for(model: dict[str, Any], thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """Each paper claim that applies to this model, with the measured number and its verdict."""
    out = []
    for exp, metric, key, text, needs in CLAIMS:
        e = model["experiments"].get(exp)
        if not e or (e["prov"].get("status") == "ok" and metric not in e["metrics"]):
            continue
        t = thresholds[key]
        row = {"model": model["name"], "page": exp, "text": text.format(t=t), "exp": exp,
               "threshold": fmt(t)}
        need = model["experiments"].get(needs) if needs else None
        if needs and (need is None or need["prov"].get("status") != "ok"):
            why = " ".join(need["prov"].get("notes", [])) if need else "not built"
            out.append({**row, "value": "—", "verdict": "n/a", "css": "unknown", "why": why})
            continue
        if e["prov"].get("status") != "ok":
            continue
        value = e["metrics"][metric]["value"]
        holds = value is not None and value >= t
        out.append({**row, "value": fmt(value), "verdict": "holds" if holds else "does not hold",
                    "css": "holds" if holds else "fails", "why": ""})
    return out
