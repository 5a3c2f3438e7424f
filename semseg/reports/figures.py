"""Figures of a run and of a set of scores, drawn with matplotlib and returned as PNG bytes.

- :func:`results_figure`: training curves (loss, lr, validation means, per-class IoU) from ``metrics.jsonl`` entries;
- :func:`confusion_figure`: the confusion matrix with class names, as pixel counts or normalized by row (recall);
- :func:`class_iou_figure`: per-class IoU as horizontal bars in the class colours;
- :func:`class_pixels_figure`: the share of pixels of each class (training-set audit and/or evaluated set).

Each returns PNG bytes, or SVG (``fmt="svg"``, text kept as text). Figures
are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas,
never through ``pyplot``: no global state, no GUI backend, safe in worker
threads and in a run that the user drives from a notebook. They are redrawn at
every validation, so they stay cheap: fixed margins instead of
``tight_layout`` (which measures every label twice), numbers written in cells
only while the matrix is small enough to read them (BENCHMARKS.md, "Reports").
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np

from semseg.errors import SemsegError

Palette = Sequence[Sequence[int]]
# cells of a confusion matrix get their value written in them up to this many classes
ANNOTATE_MAX_CLASSES = 24
PNG_OPTIONS = {"compress_level": 3}  # zlib 3: within a few % of the default's size, cheaper to write


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, fmt: str) -> bytes:
    """PNG (the run folder's format) or SVG with its text kept as text (editable, searchable)."""
    import matplotlib

    if fmt not in ("png", "svg"):
        raise SemsegError(f"figure format must be png or svg, got {fmt!r}")
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format=fmt, **({"pil_kwargs": PNG_OPTIONS} if fmt == "png" else {}))
    return buffer.getvalue()


def _colour(rgb: Sequence[int]) -> tuple[float, float, float]:
    """A palette colour for lines and bars; near-white colours darkened so they show on white."""
    r, g, b = (min(255, max(0, int(c))) / 255 for c in rgb)
    if 0.299 * r + 0.587 * g + 0.114 * b > 0.85:
        r, g, b = 0.7 * r, 0.7 * g, 0.7 * b
    return r, g, b


def _check_names(class_names: Sequence[str], palette: Palette) -> None:
    if len(palette) < len(class_names):
        raise SemsegError(f"{len(class_names)} class names but only {len(palette)} palette colours")


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["epoch"], entry[key]) for entry in history if entry.get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def results_figure(history: Sequence[dict[str, Any]], class_names: Sequence[str], palette: Palette,
                   fmt: str = "png") -> bytes:
    """Four panels over the epochs of ``history`` (``metrics.jsonl`` entries): train loss, lr, the
    validation means (mIoU, mean acc, mDice, in %) and per-class IoU (%) in the class colours."""
    _check_names(class_names, palette)
    figure = _figure(12, 8)
    axes = figure.subplots(2, 2)
    figure.subplots_adjust(left=0.07, right=0.8, bottom=0.08, top=0.94, wspace=0.25, hspace=0.3)

    loss, lr, means, classes = axes.ravel()
    loss.plot(*_series(history, "train_loss"), marker=".", color="tab:blue")
    loss.set(title="train loss", xlabel="epoch")
    lr.plot(*_series(history, "lr"), marker=".", color="tab:orange")
    lr.set(title="learning rate (last step of the epoch)", xlabel="epoch")
    from matplotlib.ticker import FormatStrFormatter

    lr.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))  # no offset text: it would sit on the title
    for key, label in (("miou", "mIoU"), ("mean_acc", "mean acc"), ("mdice", "mDice")):
        epochs, values = _series(history, key)
        means.plot(epochs, [100 * v for v in values], marker=".", label=label)
    means.set(title="validation", xlabel="epoch", ylabel="%")
    means.legend(loc="lower right", fontsize=8)
    validated = [entry for entry in history if entry.get("per_class_iou")]
    for c, name in enumerate(class_names):
        points = [(e["epoch"], e["per_class_iou"].get(name)) for e in validated]
        points = [(x, 100 * y) for x, y in points if y is not None]
        if points:
            classes.plot(*zip(*points), color=_colour(palette[c]), label=name, linewidth=1.2)
    classes.set(title="per-class IoU (validation)", xlabel="epoch", ylabel="%")
    if validated and len(class_names) <= 40:
        classes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False,
                       ncol=1 if len(class_names) <= 20 else 2)
    from matplotlib.ticker import MaxNLocator

    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(figure, fmt)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], normalize: bool = False, fmt: str = "png") -> bytes:
    """The confusion matrix (rows = ground truth, columns = prediction) with class names on both axes.

    ``normalize``: each row divided by its ground-truth pixels (the diagonal is
    each class's recall; a class without ground truth has an empty row); else
    pixel counts on a logarithmic colour scale, so that small classes show.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    size = len(class_names)
    if counts.shape != (size, size):
        raise SemsegError(f"a confusion matrix of shape {list(counts.shape)} for {size} class names")
    from matplotlib.colors import LogNorm, Normalize

    side = min(22.0, max(6.0, 2.5 + 0.35 * size))
    figure = _figure(side + 1.2, side)
    ax = figure.add_axes((0.2, 0.2, 0.68, 0.72))
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0)
        norm, title = Normalize(0.0, 1.0), "confusion matrix, normalized by ground truth (row = recall)"
    else:
        values = counts
        norm, title = LogNorm(1.0, max(10.0, counts.max())), "confusion matrix (pixels, log colour scale)"
    shown = np.where(values > 0, values, np.nan) if not normalize else values
    image = ax.imshow(shown, cmap="Blues", norm=norm, interpolation="nearest", aspect="equal")
    colorbar_ax = figure.add_axes((0.9, 0.2, 0.025, 0.72))
    figure.colorbar(image, cax=colorbar_ax)
    font = 7 if size <= 12 else 6 if size <= 20 else max(3, int(120 / size))
    ax.set_xticks(range(size), [str(n) for n in class_names], rotation=60, ha="right", fontsize=font)
    ax.set_yticks(range(size), [str(n) for n in class_names], fontsize=font)
    ax.set(xlabel="prediction", ylabel="ground truth", title=title)
    ax.title.set_fontsize(9)
    if size <= ANNOTATE_MAX_CLASSES:
        top = np.nanmax(values) if np.isfinite(values).any() else 1.0
        for (g, p), value in np.ndenumerate(values):
            if not np.isfinite(value) or value == 0:
                continue
            text = f"{value:.2f}" if normalize else _short_count(value)
            dark = (value > 0.5) if normalize else (math.log10(value + 1) > 0.6 * math.log10(top + 1))
            ax.text(p, g, text, ha="center", va="center", fontsize=font - 1, color="white" if dark else "black")
    return _save(figure, fmt)


def _short_count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{int(value)}"


def _bar_axes(count: int) -> Any:
    """A figure with one axes for ``count`` horizontal bars: 0.28 in a bar, fixed margins for title and x label."""
    height = min(30.0, max(2.5, 1.0 + 0.28 * count))
    figure = _figure(8, height)
    return figure, figure.add_axes((0.22, 0.55 / height, 0.72, 1 - 0.9 / height))


def class_iou_figure(per_class_iou: dict[str, float | None], palette: Palette, title: str = "per-class IoU",
                     fmt: str = "png") -> bytes:
    """Horizontal bars of IoU (%) per class, in class order and colour; an undefined IoU is marked "n/a"."""
    names = list(per_class_iou)
    _check_names(names, palette)
    figure, ax = _bar_axes(len(names))
    values = [per_class_iou[n] for n in names]
    heights = [100 * v if v is not None else 0.0 for v in values]
    ax.barh(range(len(names)), heights, color=[_colour(palette[i]) for i in range(len(names))], edgecolor="black",
            linewidth=0.5)
    for i, value in enumerate(values):
        ax.text((100 * value if value is not None else 0) + 1, i, "n/a" if value is None else f"{100 * value:.1f}",
                va="center", fontsize=7)
    defined = [v for v in values if v is not None]
    if defined:
        ax.axvline(100 * sum(defined) / len(defined), color="black", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) <= 40 else 5)
    ax.invert_yaxis()
    ax.set(xlim=(0, 105), xlabel="IoU (%), dashed: mean over defined classes", title=title)
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, fmt)


def class_pixels_figure(
    class_names: Sequence[str],
    palette: Palette,
    series: dict[str, Sequence[int]],
    fmt: str = "png",
) -> bytes:
    """Share of labelled pixels per class (%, log scale) for each named set of counts in ``series``
    (e.g. ``{"train (audit)": ..., "val": ...}``): bars side by side, the classes in their colours."""
    _check_names(class_names, palette)
    if not series:
        raise SemsegError("class_pixels_figure needs at least one set of pixel counts")
    size = len(class_names)
    for label, counts in series.items():
        if len(counts) != size:
            raise SemsegError(f"pixel counts {label!r}: {len(counts)} values for {size} classes")
    figure, ax = _bar_axes(size)
    width = 0.8 / len(series)
    hatches = ["", "//", "..", "xx"]
    smallest = 100.0
    for k, (label, counts) in enumerate(series.items()):
        total = float(sum(counts)) or 1.0
        shares = [100.0 * c / total for c in counts]
        smallest = min([smallest, *(s for s in shares if s > 0)])
        positions = [i - 0.4 + width * (k + 0.5) for i in range(size)]
        ax.barh(positions, [max(s, 1e-6) for s in shares], height=width, color=[_colour(palette[i]) for i in range(size)],
                edgecolor="black", linewidth=0.5, hatch=hatches[k % len(hatches)])
        if size <= 40:
            for y, share in zip(positions, shares):
                ax.text(max(share, 1e-6) * 1.15, y, f"{share:.2g}%", va="center", fontsize=6)
    ax.set_xscale("log")
    ax.set_xlim(smallest / 4, 250)  # room on the right for the labels
    ax.set_yticks(range(size), list(class_names), fontsize=7 if size <= 40 else 5)
    ax.invert_yaxis()
    ax.set(xlabel="share of labelled pixels (%, log scale)", title="pixels per class")
    if len(series) > 1:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor="white", edgecolor="black", hatch=hatches[k % len(hatches)], label=label)
                   for k, label in enumerate(series)]
        ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3, which="both")
    return _save(figure, fmt)
