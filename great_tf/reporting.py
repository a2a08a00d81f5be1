"""Result tables (Markdown, CSV, JSON) and figures for the trainers."""

import csv
import os

from great_tf.runs import write_json


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
    write_json(f"{stem}.json", {"title": title, "columns": columns, "rows": rows, "notes": list(notes)})
    return "\n".join(parts)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI machines
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_eps(curves, path, title, xlabel="eps"):
    """One panel per attack: accuracy (%) against eps for every method (the paper's Fig. 4 right).

    `curves` is {attack name: {method: (eps values, accuracies)}}. Returns `path` (a PNG).
    """
    return plot_panels(curves, path, title, xlabel, "test accuracy %", ylim=(0, 100))


def plot_panels(panels, path, title, xlabel, ylabel, ylim=None, xscale="linear"):
    """One panel per key of `panels` ({panel: {line label: (x values, y values)}}), a line with
    markers per label; `xscale` as matplotlib's ("log" for values spread over decades). Returns
    `path` (a PNG)."""
    plt = _pyplot()
    labels = list(dict.fromkeys(label for lines in panels.values() for label in lines))
    styles = line_styles(labels)
    many = len(labels) > 6  # one legend beside the panels instead of one crowded legend in each
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + (2 if many else 0), 4),
                             squeeze=False)
    for ax, (panel, lines) in zip(axes[0], panels.items()):
        for label, (x, y) in lines.items():
            ax.plot(x, y, markersize=3, label=label, **styles[label])
        ax.set_title(panel)
        ax.set_xscale(xscale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        if not many:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    if many:
        handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
        fig.legend([handles[label] for label in labels], labels, loc="center right", fontsize=8)
        fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_size_inches()[0], 1))
    else:
        fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def line_styles(labels):
    """{label: plot keywords}: a colour and a marker each, distinct for up to 20 labels (ten
    colours are not enough for a dozen multi-task methods)."""
    plt = _pyplot()
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20").colors
    markers = "os^Dv<>pXh"
    return {label: {"color": colours[i % len(colours)], "marker": markers[i % len(markers)]}
            for i, label in enumerate(labels)}


def plot_saliency_grid(images, maps, path, title):
    """Rows: images; columns: the image, then each method's saliency map (Fig. 4 left).

    `images` is [n, h, w, c] in [0, 1]; `maps` is {method: [n, h, w]}, each map scaled to its own
    maximum so that the pattern, not the magnitude, is compared. Returns `path` (a PNG).
    """
    import numpy as np

    plt = _pyplot()
    n, cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.8 * cols, 1.8 * n + 0.6), squeeze=False)
    for i in range(n):
        image = np.clip(images[i], 0, 1)
        axes[i][0].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        for j, (method, values) in enumerate(maps.items(), start=1):
            m = np.asarray(values[i], np.float64)
            axes[i][j].imshow(m / max(m.max(), 1e-12), cmap="hot", vmin=0, vmax=1)
            if i == 0:
                axes[i][j].set_title(method, fontsize=9)
        if i == 0:
            axes[i][0].set_title("image", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
