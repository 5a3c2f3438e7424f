"""``report.html``: one self-contained page (inline CSS, figures embedded as PNG data URIs, no script,
nothing fetched), so it opens offline, attached to an e-mail or copied out of the run folder."""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

from semseg.metrics import CLASS_KEYS, pixel_ratio, pixel_ratio_flagged, pixel_ratio_flags, pixel_ratio_text

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1280px; padding: 0 16px; color: #1b1b1b; }
h1 { font-size: 1.5em; margin-bottom: 4px; } h2 { font-size: 1.15em; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 3px 8px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f5f5f5; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #333; vertical-align: middle;
          margin-right: 6px; }
.means { font-size: 1.05em; margin: 8px 0 12px; } .means b { font-size: 1.2em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; } figure { margin: 12px 0; }
figcaption { color: #555; font-size: 0.85em; } .row { display: flex; flex-wrap: wrap; gap: 16px; }
.row figure { flex: 1 1 480px; } .note { color: #666; font-size: 0.85em; }
td.flag { background: #ffd8a8; font-weight: 600; } .flags { color: #8a4b00; font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _percent(value: float | None) -> str:
    return "&ndash;" if value is None else f"{100 * value:.2f}"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, alt: str, caption: str) -> str:
    return (f'<figure><img src="{data_uri(png)}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _fact(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _e(value)


def _facts_table(facts: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(key.replace('_', ' '))}</th><td>{_fact(value)}</td></tr>" for key, value in facts.items())
    return f"<table>{rows}</table>"


def _class_table(scores: dict[str, Any], palette: Sequence[Sequence[int]]) -> str:
    """The per-class table of ``semseg score``'s text report, with the pred/GT pixel ratios at 2x or more (or
    half or less) marked in their cell and named under the table."""
    keys = CLASS_KEYS + (("boundary_iou",) if "mboundary_iou" in scores else ())  # semseg val adds boundary IoU
    head = "".join(f'<th class="num">{_e(k)} %</th>' for k in keys)
    lines = [f'<table><tr><th>id</th><th>class</th>{head}<th class="num">GT pixels</th><th class="num">pred pixels</th>'
             '<th class="num">pred/GT</th></tr>']
    ratios = {name: pixel_ratio(row) for name, row in scores["per_class"].items()}
    for c, (name, row) in enumerate(scores["per_class"].items()):
        r, g, b = (int(v) for v in palette[c])
        iou = row["iou"]
        shade = f' style="background: rgba(46, 160, 67, {0.08 + 0.5 * iou:.2f})"' if iou is not None else ""
        cells = "".join(
            f'<td class="num"{shade if key == "iou" else ""}>{_percent(row[key])}</td>' for key in keys
        )
        ratio_class = "num flag" if pixel_ratio_flagged(ratios[name]) else "num"
        ratio = "&ndash;" if ratios[name] is None else _e(pixel_ratio_text(ratios[name]))
        lines.append(
            f'<tr><td class="num">{c}</td><td><span class="swatch" style="background: rgb({r},{g},{b})"></span>{_e(name)}'
            f'</td>{cells}<td class="num">{row["gt_pixels"]:,}</td><td class="num">{row["pred_pixels"]:,}</td>'
            f'<td class="{ratio_class}">{ratio}</td></tr>'
        )
    lines.append("</table>")
    lines.extend(f"<p class='flags'>{_e(line)}</p>" for line in pixel_ratio_flags(ratios))
    return "".join(lines)


def render_html(
    title: str,
    facts: dict[str, Any],
    scores: dict[str, Any] | None,
    palette: Sequence[Sequence[int]],
    figures: dict[str, bytes],
    scores_caption: str = "",
) -> str:
    """The page: ``facts`` (a key-value table), the means and per-class table of ``scores`` (a
    :func:`semseg.metrics.report` dict), then the ``figures`` present (by file name: results.png,
    class_iou.png, class_pixels.png, confusion_matrix*.png, val_gallery.png)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>", _facts_table(facts)]
    if scores is not None:
        parts.append(f"<h2>Scores{(' &middot; ' + _e(scores_caption)) if scores_caption else ''}</h2>")
        parts.append(
            f"<p class='means'>mIoU <b>{_percent(scores['miou'])}</b> &middot; mean acc {_percent(scores['mean_acc'])}"
            f" &middot; mDice {_percent(scores['mdice'])} &middot; pixel acc {_percent(scores['pixel_acc'])}"
            f" &middot; fwIoU {_percent(scores['fwiou'])}"
            + (f" &middot; mBoundaryIoU {_percent(scores['mboundary_iou'])}" if "mboundary_iou" in scores else "")
            + f" &middot; {scores['num_images']} images</p>"
        )
        parts.append(_class_table(scores, palette))
        parts.append("<p class='note'>&ndash;: undefined (no ground-truth pixels, or no pixels at all), left out of "
                     "the means. One confusion matrix over all pixels of all images (docs/metrics.md).</p>")
    captions = {
        "results.png": ("Training curves", "train loss, lr, validation means and per-class IoU by epoch"),
        "class_iou.png": ("Per-class IoU", "IoU per class; dashed line: the mean"),
        "class_pixels.png": ("Pixels per class", "share of labelled pixels of each class"),
        "confusion_matrix_normalized.png": ("Confusion matrix, normalized", "rows: ground truth; each row sums to 1"),
        "confusion_matrix.png": ("Confusion matrix", "pixel counts, rows: ground truth, columns: prediction"),
        "val_gallery.png": ("Gallery", "a spread of frames, then the worst by frame IoU: image | ground truth | "
                            "prediction | error map (red: wrong, grey: correct, black: ignored)"),
    }
    if "results.png" in figures:
        parts.append("<h2>Training curves</h2>" + _figure(figures["results.png"], "training curves", captions["results.png"][1]))
    pair = [name for name in ("class_iou.png", "class_pixels.png") if name in figures]
    if pair:
        parts.append("<h2>Classes</h2><div class='row'>" + "".join(
            _figure(figures[name], captions[name][0], captions[name][1]) for name in pair) + "</div>")
    matrices = [name for name in ("confusion_matrix_normalized.png", "confusion_matrix.png") if name in figures]
    if matrices:
        parts.append("<h2>Confusion matrices</h2><div class='row'>" + "".join(
            _figure(figures[name], captions[name][0], captions[name][1]) for name in matrices) + "</div>")
    if "val_gallery.png" in figures:
        parts.append("<h2>Gallery</h2>" + _figure(figures["val_gallery.png"], "gallery", captions["val_gallery.png"][1]))
    parts.append("<p class='note'>Written by semseg. Self-contained: the figures are embedded in this file.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
