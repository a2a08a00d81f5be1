"""Comparison tables of multi-task methods as the field reports them: Δm against the single-task
baselines and mean ± standard deviation over seeds (docs/design.md#mtl-methods).

Rows are dicts keyed by table column (a metric's label from `Task.metric_labels`, "train s",
...), one per method and seed, with "method" and "seed". From them:

- `delta_m(row, baseline, directions)`: Δm % (Maninis et al. 2019; the sign of LibMTL's
  `count_improvement`): (100 / K) Σ_k s_k (M_k − B_k) / B_k over the K metrics, s_k = +1 where
  higher is better and −1 where lower is better, B the single-task baseline; positive is better.
- `add_delta_m(rows, directions)`: every row's Δm against the mean over seeds of the "single"
  rows (the same baseline for every seed; then the "single" row's own Δm averages to 0 and its
  spread is the single-task networks' own seed-to-seed spread), and why there is none if so.
- `summarize(rows, columns)`: one row per method: the mean of every numeric column over its seeds
  and, with two seeds or more, the sample standard deviation as `<column> std`.
- `write_comparison(...)`: `<stem>.md` (mean ± std, sorted by Δm, best first), `<stem>.csv` (the
  per-seed rows) and `<stem>.json` (both).
"""

import csv
import math
import os

from great_tf.errors import GreatError
from great_tf.mtl.tasks import HIGHER, LOWER
from great_tf.reporting import markdown_table
from great_tf.runs import write_json

DELTA_M = "Δm %"
SINGLE = "single"
STD = " std"


def column_directions(tasks):
    """{table column: "lower" | "higher"} for every metric of `tasks`."""
    directions = {}
    for task in tasks:
        labels, ways = task.metric_labels(), task.metric_directions()
        directions.update({labels[name]: ways[name] for name in labels})
    return directions


def delta_m(row, baseline, directions):
    """Δm % of `row` against `baseline` over the metrics in `directions` (see the module)."""
    changes = []
    for column, direction in directions.items():
        if direction not in (LOWER, HIGHER):
            raise GreatError(f"metric {column!r} has direction {direction!r}: use 'lower' or 'higher'")
        value, base = row.get(column), baseline.get(column)
        if value is None or base is None:
            raise GreatError(f"Δm needs {column!r} in both the row and the single-task baseline")
        if base == 0:
            raise GreatError(f"the single-task baseline of {column!r} is 0: Δm divides by it")
        sign = 1.0 if direction == HIGHER else -1.0
        changes.append(sign * (value - base) / base)
    if not changes:
        raise GreatError("Δm needs at least one metric")
    return 100.0 * sum(changes) / len(changes)


def mean_and_std(values):
    """(mean, sample standard deviation) of the numbers among `values`; std is None with fewer
    than two; (None, None) with none."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return None, None
    mean = sum(numbers) / len(numbers)
    if len(numbers) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1))


def baseline_row(rows, method=SINGLE):
    """The mean over seeds of `method`'s rows, or None if there is none."""
    mine = [r for r in rows if r.get("method") == method]
    if not mine:
        return None
    columns = {k for r in mine for k in r}
    return {k: mean_and_std([r.get(k) for r in mine])[0] for k in columns if k not in ("method", "seed")}


def add_delta_m(rows, directions, method=SINGLE):
    """(the rows with DELTA_M against the mean of `method`'s rows, None if there is no Δm and why
    not): without `method`'s rows, or with a baseline metric of 0 (a share of pixels within
    11.25° after a few steps, say), every DELTA_M is None."""
    baseline = baseline_row(rows, method)
    if baseline is None:
        return [{**r, DELTA_M: None} for r in rows], f"no {method!r} rows"
    try:
        return [{**r, DELTA_M: delta_m(r, baseline, directions)} for r in rows], None
    except GreatError as err:
        return [{**r, DELTA_M: None} for r in rows], str(err)


def summarize(rows, columns):
    """One row per method (first-appearance order): "method", "seeds", the mean of each of
    `columns` and, from two seeds on, `<column> std`."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        row = {"method": method, "seeds": len(mine)}
        for column in columns:
            mean, std = mean_and_std([r.get(column) for r in mine])
            row[column] = mean
            if len(mine) > 1:
                row[column + STD] = std
        summary.append(row)
    return summary


def sort_by_delta_m(rows):
    """Best Δm first; rows without a Δm keep their order, after the others."""
    scored = [r for r in rows if r.get(DELTA_M) is not None]
    return sorted(scored, key=lambda r: -r[DELTA_M]) + [r for r in rows if r.get(DELTA_M) is None]


def cell(row, column, fmt):
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, float):
        return value
    std = row.get(column + STD)
    text = format(value, fmt)
    return text if std is None else f"{text} ± {format(std, fmt)}"


def write_comparison(stem, seed_rows, columns, title, notes=(), formats=None):
    """Writes `<stem>.md`, `.csv` and `.json` (see the module) from the per-seed rows (with
    DELTA_M already added); returns (the Markdown text, the summary rows in table order)."""
    formats = formats or {}
    summary = sort_by_delta_m(summarize(seed_rows, [c for c in columns if c != "method"]))
    header = {c: c.replace("|", "\\|") for c in columns}  # "normals 1-|cos|" in a Markdown table
    shown = [{header[c]: cell(r, c, formats.get(c, ".4g")) if c != "method" else r["method"]
              for c in columns} for r in summary]
    table = markdown_table(shown, [header[c] for c in columns])
    text = "\n".join([f"## {title}", "", table, *([""] + list(notes) if notes else [])])
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(f"{stem}.md", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    csv_columns = ["method", "seed", *[c for c in columns if c != "method"]]
    with open(f"{stem}.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(seed_rows)
    write_json(f"{stem}.json", {"title": title, "columns": columns, "rows": summary, "seed_rows": seed_rows,
                                "notes": list(notes)})
    return text, summary
