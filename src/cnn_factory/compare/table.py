"""What `cnn-factory compare` prints: the table a screen wide, or JSON for scripts."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from cnn_factory.compare.pairing import Comparison, Figure

WIDTH = 100  # the table's width on a terminal


def report_lines(result: Comparison, width: int = WIDTH) -> list[str]:
    """The table `cnn-factory compare` prints, at most `width` columns: per run a line per output,
    its name on the first and the params it changed (`key=value`) on the lines below."""
    ref = result.reference
    what = "each run's own 95% interval (unpaired)" if result.unpaired else "difference [95% paired bootstrap interval]"
    images = f"{result.images} {'' if result.folds else 'test '}images"
    images += f" of {result.groups} groups" if result.groups else ""
    kind = "out-of-fold" if result.folds else "test"
    lines = [f"{kind} figures of {len(result.runs)} run(s) against {ref.name}, {images}: {what}"]
    header = ["run, params changed", "output", "figure", "value", "interval" if result.unpaired else "difference", ""]
    rows: list[list[str]] = [header]
    digits = {f.output: _decimals(f.value) for f in result.figures[ref.name]}  # one precision per output
    for run in [ref, *result.runs]:
        names = [f"{run.name} (reference)" if run is ref else run.name]
        names += [f"  {k}={_value(v)}" for k, v in result.changed.get(run.name, {}).items()]
        cells = [_cells(f, result.unpaired, digits.get(f.output, 3)) for f in result.figures[run.name]]
        for i in range(max(len(cells), len(names))):
            rows.append([names[i] if i < len(names) else "", *(cells[i] if i < len(cells) else [""] * 5)])
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    widths[0] = max(len(header[0]), min(widths[0], width - sum(widths[1:]) - 2 * (len(header) - 1)))
    for row in rows:
        cut = [_cut(cell, w) for cell, w in zip(row, widths)]
        lines.append(
            "  ".join(c.rjust(w) if i in (3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(cut, widths))).rstrip()
        )
    if len(result.runs) > 3 and not result.unpaired:
        lines.append("with many runs, expect about 1 in 20 intervals to exclude 0 by chance alone")
    if result.skipped:
        shown = ", ".join(result.skipped)
        lines.append(_cut(f"not evaluated with their params (running, failed, not pulled or not run): {shown}", width))
    return lines


def _cells(figure: Figure, unpaired: bool, digits: int) -> list[str]:
    """output, figure, value, difference [interval] (or the interval alone), verdict."""
    value = _number(figure.value, digits)
    if math.isnan(figure.low):
        return [figure.output, figure.figure, value, "", figure.verdict]
    sign = "" if unpaired else "+"
    span = f"[{_number(figure.low, digits, sign)}, {_number(figure.high, digits, sign)}]"
    if not unpaired:
        span = f"{_number(figure.difference or 0.0, digits, sign)} {span}"
    return [figure.output, figure.figure, value, span, figure.verdict]


def _decimals(value: float) -> int:
    """Decimals that show a figure to about 3 significant digits (at least 1 for a large one)."""
    if not math.isfinite(value) or value == 0:
        return 3
    return int(min(4, max(1, 2 - math.floor(math.log10(abs(value))))))


def _number(value: float, decimals: int, sign: str = "") -> str:
    return f"{value:{sign}.{decimals}f}" if math.isfinite(value) else "n/a"


def report_json(result: Comparison) -> dict[str, Any]:
    """`cnn-factory compare --json`: the same as the table, with every number unrounded (null where not finite)."""
    return {
        "reference": {"name": result.reference.name, "rev": result.reference.rev},
        "images": result.images,
        "groups": result.groups,
        "folds": result.folds,
        "paired": not result.unpaired,
        "skipped": result.skipped,
        "runs": [
            {
                "name": run.name,
                "rev": run.rev,
                "changed": result.changed.get(run.name, {}),
                "outputs": {f.output: _figure_json(f) for f in result.figures[run.name]},
            }
            for run in [result.reference, *result.runs]
        ],
    }


def _figure_json(figure: Figure) -> dict[str, Any]:
    """The figure's fields but its output, its numbers finite or None."""
    fields = {k: v for k, v in asdict(figure).items() if k != "output"}
    return {k: v if isinstance(v, str) or v is None or math.isfinite(v) else None for k, v in fields.items()}


def print_comparison(result: Comparison, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report_json(result), indent=1))
    else:
        print("\n".join(report_lines(result)))


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
