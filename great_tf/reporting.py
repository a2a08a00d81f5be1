"""Result tables (Markdown, CSV, JSON) and figures for the trainers."""

import csv
import json
import os


def markdown_table(rows, columns, formats=None):
    """A Markdown table of `rows` (dicts) with `columns` (keys, in order); missing cells are '-'."""
    formats = formats or {}

    def cell(row, col):
        value = row.get(col)
        if value is None:
            return "-"
        if isinstance(value, float):
            return format(value, formats.get(col, ".4g"))
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_table(rows, columns, stem, title=None, notes=(), formats=None):
    """Writes `<stem>.md`, `<stem>.csv` and `<stem>.json`; returns the Markdown text."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    text = markdown_table(rows, columns, formats)
    parts = ([f"## {title}", ""] if title else []) + [text] + ([""] + list(notes) if notes else [])
    with open(f"{stem}.md", "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    with open(f"{stem}.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(f"{stem}.json", "w", encoding="utf-8") as f:
        json.dump({"title": title, "columns": columns, "rows": rows, "notes": list(notes)}, f, indent=2)
    return "\n".join(parts)
