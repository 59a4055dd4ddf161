"""Charts to files: the Vega-Lite spec with its data beside it, and a static SVG of the same chart.

Every chart carries its provenance line in the subtitle and the full provenance in `usermeta`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from generator.artifacts import _clean, dumps


def chart_files(name: str, chart: Any, provenance_line: str, usermeta: dict) -> dict[str, str]:
    """Spec with its data split out to `<name>.data.json`, plus the static SVG."""
    import vl_convert

    spec = chart.to_dict()
    datasets = spec.pop("datasets", {})
    title = spec.get("title")
    if isinstance(title, dict):
        title["subtitle"] = [*title.get("subtitle", []), provenance_line]
    spec["usermeta"] = usermeta
    # The largest dataset goes to the file beside the spec; any other (a layer's few marker
    # rows) stays inline, so every layer reads its own data.
    main = max(datasets, key=lambda k: len(datasets[k]), default=None)
    rows = _clean(datasets[main]) if main is not None else []
    url = f"{name}.data.json"
    spec = _relink(spec, {k: {"url": url} if k == main else {"values": _clean(v)}
                          for k, v in datasets.items()})
    inline = _relink(json.loads(json.dumps(spec)), {url: {"values": rows}})
    svg = stable_ids(vl_convert.vegalite_to_svg(inline, allowed_base_urls=[]), name)
    return {f"{name}.vl.json": dumps(spec), f"{name}.data.json": dumps(rows), f"{name}.svg": svg}


def stable_ids(svg: str, prefix: str) -> str:
    """vl-convert numbers gradients and clips with a process-wide counter: renumber per chart."""
    seen: dict[str, str] = {}

    def rename(m: re.Match) -> str:
        return seen.setdefault(m.group(0), f"{prefix}-{m.group(1)}{len(seen)}")

    return re.sub(r"\b(gradient|clip|pattern)_?(\d+)\b", rename, svg)


def _relink(node: Any, data: dict[str, dict]) -> Any:
    """Replace each `{"name": n}` / `{"url": n}` data reference whose n is a key of `data`."""
    if isinstance(node, dict):
        ref = node.get("name") if node.keys() == {"name"} else (
            node.get("url") if node.keys() == {"url"} else None)
        if isinstance(ref, str) and ref in data:
            return dict(data[ref])
        return {k: _relink(v, data) for k, v in node.items()}
    if isinstance(node, list):
        return [_relink(v, data) for v in node]
    return node


