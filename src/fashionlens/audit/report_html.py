"""Audit reports: the suspects as a CSV table and as one self-contained HTML page with thumbnails.

The page needs nothing but itself: thumbnails are inlined as base64 JPEG ``data:`` URIs (or, with
``embed_images=False``, linked by paths relative to the page), styles are inline, there are no scripts,
fonts or other external resources.  Rows are sorted by confidence (most certainly mislabelled first).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Sequence
from typing import Any

from fashionlens.data.decode import load_image
from fashionlens.data.samples import Sample

CSV_COLUMNS = ("rank", "image", "given", "suggested", "confidence", "p_given", "p_suggested", "cleanlab")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f4f4f4}img{display:block;max-width:none}.num{text-align:right;font-variant-numeric:tabular-nums}
.given{color:#b00020}.suggested{color:#006b2e;font-weight:600}.path{font-size:.8em;color:#666;word-break:break-all}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:600}
"""


def _sorted(suspects: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(suspects, key=lambda r: (-float(r["confidence"]), int(r.get("rank", 0))))


def write_suspects_csv(path: str, suspects: Sequence[dict[str, Any]], images: Sequence[str]) -> str:
    """CSV with columns :data:`CSV_COLUMNS`, one row per suspect sorted by confidence (plus ``in_sample``, 1
    when the scoring network trained on that image, when the rows carry it: ``audit --scorer probabilities``).

    ``suspects``: rows of :func:`fashionlens.audit.label_audit.audit` (``index`` points into ``images``,
    the image paths of the audited samples)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    in_sample = any("in_sample" in r for r in suspects)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS + (("in_sample",) if in_sample else ()))
        for r in _sorted(suspects):
            cleanlab = "" if r.get("cleanlab") is None else int(bool(r["cleanlab"]))
            extra = [_flag(r.get("in_sample"))] if in_sample else []
            out.writerow([r["rank"], images[r["index"]], r["given"], r["suggested"], f"{r['confidence']:.6f}",
                          f"{r['p_given']:.6f}", f"{r['p_suggested']:.6f}", cleanlab, *extra])
    return path


def _flag(value: Any) -> str:
    return "" if value is None else str(int(bool(value)))


def thumbnail_uri(image: str | Sample, size: int = 128, quality: int = 80) -> str:
    """``data:image/jpeg;base64,...`` of the image shrunk to fit ``size`` x ``size`` pixels (aspect kept)."""
    picture = load_image(image)
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_cell(sample: Sample, page_dir: str, size: int, embed: bool) -> str:
    if embed:
        try:
            src = thumbnail_uri(sample, size)
        except (ValueError, FileNotFoundError, OSError) as exc:
            return f"<td>unreadable: {html.escape(str(exc))}</td>"
    elif sample.array is not None:
        return "<td>(in-memory image)</td>"
    else:
        src = os.path.relpath(os.path.abspath(sample.image), page_dir).replace(os.sep, "/")
    return (f'<td><img src="{html.escape(src, quote=True)}" alt="" loading="lazy" '
            f'style="max-width:{size}px;max-height:{size}px"></td>')


def _summary_block(title: str, summary: dict[str, Any]) -> str:
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(_fmt(v))}</dd>" for k, v in summary.items()
                    if not isinstance(v, (list, dict)))
    return f"<h1>{html.escape(title)}</h1><dl>{items}</dl>"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_suspects_html(path: str, suspects: Sequence[dict[str, Any]], samples: Sequence[Sample], *,
                        summary: dict[str, Any] | None = None, title: str = "Suspected label errors",
                        thumb: int = 128, limit: int = 1000, embed_images: bool = True) -> str:
    """One self-contained HTML page: the summary, then a table of the first ``limit`` suspects sorted by
    confidence with their thumbnail (``thumb`` pixels), given and suggested class, probabilities, and whether
    cleanlab flags them too.  ``samples``: the audited samples (``suspects[i]["index"]`` points into them)."""
    page_dir = os.path.dirname(os.path.abspath(path))
    rows = _sorted(suspects)
    shown = rows[:limit]
    body = [_summary_block(title, summary or {})]
    if len(rows) > len(shown):
        body.append(f"<p>showing the {len(shown)} most confident of {len(rows)} suspects (full list in the CSV)</p>")
    in_sample = any("in_sample" in r for r in rows)
    body.append("<table><tr><th>rank</th><th>image</th><th>given</th><th>suggested</th><th>confidence</th>"
                "<th>p(given)</th><th>p(suggested)</th><th>cleanlab</th>"
                + ("<th>trained on it</th>" if in_sample else "") + "</tr>")
    for r in shown:
        sample = samples[r["index"]]
        cleanlab = "" if r.get("cleanlab") is None else ("yes" if r["cleanlab"] else "no")
        trained = "" if r.get("in_sample") is None else ("yes" if r["in_sample"] else "no")
        body.append(
            f'<tr><td class="num">{int(r["rank"])}</td>{_image_cell(sample, page_dir, thumb, embed_images)}'
            f'<td class="given">{html.escape(str(r["given"]))}<div class="path">{html.escape(sample.image)}</div></td>'
            f'<td class="suggested">{html.escape(str(r["suggested"]))}</td>'
            f'<td class="num">{r["confidence"]:.3f}</td><td class="num">{r["p_given"]:.3f}</td>'
            f'<td class="num">{r["p_suggested"]:.3f}</td><td>{cleanlab}</td>'
            + (f"<td>{trained}</td>" if in_sample else "") + "</tr>")
    body.append("</table>")
    if not rows:
        body.append("<p>No suspected label errors.</p>")
    return _write_page(path, title, body)


def write_review_html(path: str, samples: Sequence[Sample], *, csv_name: str, title: str = "Images to check",
                      thumb: int = 160, embed_images: bool = True) -> str:
    """A self-contained page showing the images of a review file (``cleaning.write_review``) with their given
    category, to look at while filling in the CSV ``csv_name`` (the page itself records nothing)."""
    page_dir = os.path.dirname(os.path.abspath(path))
    how = (f"<h1>{html.escape(title)}</h1><p>{len(samples)} images. In <code>{html.escape(csv_name)}</code>, "
           "correct the <b>category</b> of every image whose label is wrong and set <b>checked</b> to "
           "<code>yes</code> on each row you have checked (leave it empty to skip an image), then run "
           f"<code>fashionlens clean ... --seed-clean {html.escape(csv_name)}</code>.</p>")
    body = [how,
            "<table><tr><th>#</th><th>image</th><th>given category</th></tr>"]
    for n, sample in enumerate(samples, 1):
        body.append(f'<tr><td class="num">{n}</td>{_image_cell(sample, page_dir, thumb, embed_images)}'
                    f'<td>{html.escape(str(sample.category_name or ""))}'
                    f'<div class="path">{html.escape(sample.image)}</div></td></tr>')
    body.append("</table>")
    return _write_page(path, title, body)


__all__ = ["CSV_COLUMNS", "thumbnail_uri", "write_review_html", "write_suspects_csv", "write_suspects_html"]


def _write_page(path: str, title: str, body: Sequence[str]) -> str:
    """``body`` (HTML fragments) as one self-contained page at ``path`` (its folder made if needed)."""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
