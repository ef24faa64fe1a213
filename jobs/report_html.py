"""The HTML report: headline numbers, plots and duplicate groups with thumbnails, for a browser.

Every page is one self-contained file: plots are inline SVG (drawn with
matplotlib), thumbnails inline ``data:image/jpeg`` URIs, style inline; nothing is
fetched from anywhere. ``report.html`` holds the headline numbers, the plots and
the first page of duplicate groups (largest first); ``groups-0002.html``, ... hold
the later pages, linked both ways. Without a thumbnail source (no key) the pages
carry no image pixels at all and say so.
"""
from __future__ import annotations

import html
import io
import math
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from imgdedup.jobs import report_tables as rt

#: Thumbnail source: JPEG bytes of an image id, or None when its blob is gone.
Thumbnails = Callable[[str], "bytes | None"]

NO_KEY_NOTICE = ("Thumbnails are not shown: this report was made without --key, so it holds no image "
                 "pixels. Run imgdedup report again with --key FILE to see the pictures, decrypted locally.")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.headline{display:flex;flex-wrap:wrap;gap:1em;margin:0;padding:0}
.headline div{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;min-width:7em}
.headline dt{font-size:.85em;color:#555}.headline dd{margin:0;font-size:1.6em;font-weight:600}
.notice{background:#fff4d6;border:1px solid #e0c060;padding:.6em 1em;border-radius:6px}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0}
.group{border-top:1px solid #ddd;padding:.5em 0}.review{color:#a00;font-weight:600}
.members{display:flex;flex-wrap:wrap;gap:.6em}
.member{margin:0;width:11em;font-size:.8em;word-break:break-all}
.member.canonical{outline:2px solid #3a7}.member.near-t{outline:2px dashed #c03030}
.nopic{width:8em;height:6em;background:#eee;display:flex;align-items:center;justify-content:center;color:#777}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
"""


@dataclass(frozen=True)
class ReportPage:
    """What the HTML report shows.

    Attributes
    ----------
    headline : dict
        Numbers for the top of the page (see :func:`imgdedup.jobs.report.write_report`).
    tables : dict of str to pyarrow.Table
        The report tables by name (:mod:`imgdedup.jobs.report_tables`).
    threshold_t : int
        The dedup threshold t in bits, marked on the distance histogram.
    hash_bits : int
        Hash length in bits (the histogram's range).
    review_only : bool
        Show only the groups marked for review, widest spread first.
    page_size : int
        Groups per page.
    members_shown : int
        Thumbnails per group; further members are listed by id.
    review_margin : int
        Members at or beyond ``threshold_t - review_margin`` bits from the
        canonical image are outlined for review.
    """

    headline: dict
    tables: dict[str, pa.Table]
    threshold_t: int
    hash_bits: int
    review_only: bool
    page_size: int
    members_shown: int
    review_margin: int


def _svg(figure: Figure) -> str:
    sink = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "imgdedup"}):
        figure.savefig(sink, format="svg", bbox_inches="tight")
    text = sink.getvalue()
    return text[text.index("<svg"):]


def _figure() -> tuple[Figure, object]:
    figure = Figure(figsize=(5.2, 3.2), dpi=100)
    return figure, figure.add_subplot()


def savings_plot(summary: pa.Table) -> str:
    """Bytes stored and bytes saved after each run, as SVG."""
    figure, ax = _figure()
    versions = summary.column("version").to_numpy()
    stored = summary.column("bytes_stored").to_numpy() / 2**20
    saved = summary.column("bytes_saved").to_numpy() / 2**20
    # Stacked bars rather than an area plot: a store with one run is one visible bar.
    ax.bar(versions, stored, label="stored", alpha=.8)
    ax.bar(versions, saved, bottom=stored, label="saved by dedup", alpha=.8)
    if len(versions) <= 20:
        ax.set_xticks(versions)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("store version (one per run)")
    ax.set_ylabel("MiB of source files")
    ax.set_title("Savings over runs")
    ax.legend(loc="upper left")
    return _svg(figure)


def distance_histogram(nearest: pa.Table, threshold_t: int, hash_bits: int) -> str:
    """Histogram of nearest-neighbour distances with t marked, as SVG."""
    figure, ax = _figure()
    distances = nearest.column("distance").drop_null().to_numpy()
    ax.hist(distances, bins=np.arange(0, hash_bits + 2, max(1, hash_bits // 64)), color="#4a7fb0")
    ax.axvline(threshold_t, color="#c03030", linestyle="--", label=f"t = {threshold_t}")
    ax.set_xlabel("distance to the nearest neighbour (bits)")
    ax.set_ylabel("images")
    ax.set_title("Nearest-neighbour distances")
    ax.legend()
    return _svg(figure)


def class_size_plot(classes: pa.Table) -> str:
    """Images per class, largest class first, as SVG."""
    figure, ax = _figure()
    sizes = np.sort(classes.column("images").to_numpy())[::-1]
    ax.bar(np.arange(1, len(sizes) + 1), sizes, color="#5a9a60")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("class (by size)")
    ax.set_ylabel("images")
    ax.set_title(f"Class sizes ({len(sizes)} classes)")
    return _svg(figure)


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exponent = min(int(math.log(n, 1024)), 4)
    return f"{n / 1024 ** exponent:.1f} {'KMGT'[exponent - 1]}iB"


def _headline_html(headline: dict) -> str:
    labels = [("images", "images"), ("stored", "stored"), ("duplicates", "duplicates"),
              ("bytes_saved", "bytes saved"), ("errors", "errors"), ("classes", "classes"),
              ("groups", "duplicate groups"), ("review_groups", "groups to review")]
    cells = []
    for name, label in labels:
        value = headline[name]
        shown = _human_bytes(value) if name == "bytes_saved" else str(value)
        cells.append(f'<div><dt>{label}</dt><dd id="{name}" data-value="{value}">{shown}</dd></div>')
    return f'<dl class="headline">{"".join(cells)}</dl>'


def _member_html(member: dict, thumbnails: Thumbnails | None, near_t: int) -> str:
    # Everything read from the store is escaped: a store is not trusted to hold only hex ids.
    image_id = html.escape(member["image_id"])
    if thumbnails is None:
        picture = '<div class="nopic">no key</div>'
    else:
        jpeg = thumbnails(member["image_id"])
        picture = ('<div class="nopic">no blob of its own: get serves the canonical</div>' if jpeg is None else
                   f'<img class="thumb" alt="{image_id}" src="data:image/jpeg;base64,{b64encode(jpeg).decode()}">')
    suspect = not member["is_canonical"] and member["distance"] is not None and member["distance"] >= near_t
    role = "canonical" if member["is_canonical"] else f"distance {member['distance']} bits"
    role += " (review)" if suspect else ""
    size = f"{member['width']}×{member['height']}, {_human_bytes(member['bytes'] or 0)}"
    kind = " canonical" if member["is_canonical"] else " near-t" if suspect else ""
    return (f'<figure class="member{kind}" data-image-id="{image_id}">'
            f'{picture}<figcaption><b>{role}</b><br><code>{image_id}</code><br>'
            f'{html.escape(member["source"] or "")}<br>{size}</figcaption></figure>')


def _group_html(members: list[dict], page: ReportPage, thumbnails: Thumbnails | None) -> str:
    first = members[0]
    group_id = html.escape(first["group_id"])
    gap = page.threshold_t - first["spread"]
    where = (f"{gap} bits below t" if gap > 0 else "at t" if gap == 0
             else f"{-gap} bits beyond t (joined through a chain)")
    review = f' <span class="review">review: the farthest member lies {where}</span>' if first["review"] else ""
    near_t = page.threshold_t - page.review_margin
    # Farthest members first: they are the likeliest wrong merges, so they get the thumbnails.
    members = [first, *sorted(members[1:], key=lambda m: -(m["distance"] or 0))]
    shown = "".join(_member_html(m, thumbnails, near_t) for m in members[:page.members_shown])
    rest = members[page.members_shown:]
    listed = ", ".join(f'<code>{html.escape(m["image_id"])}</code>' for m in rest)
    more = f"<p>{len(rest)} more: {listed}</p>" if rest else ""
    return (f'<section class="group" id="group-{group_id}" data-rank="{first["group_rank"]}">'
            f'<h3>#{first["group_rank"]}: {first["group_size"]} images, spread {first["spread"]} bits{review}</h3>'
            f'<p>group <code>{group_id}</code> (undo a wrong merge: '
            f'<code>imgdedup unmerge {group_id} IMAGE_ID</code>)</p>'
            f'<div class="members">{shown}</div>{more}</section>')


def _ordered_groups(page: ReportPage) -> list[list[dict]]:
    groups = page.tables[rt.GROUPS]
    if page.review_only:
        groups = groups.filter(groups.column("review"))
    by_group: dict[str, list[dict]] = {}
    for member in groups.to_pylist():
        by_group.setdefault(member["group_id"], []).append(member)
    ordered = list(by_group.values())
    if page.review_only:
        ordered.sort(key=lambda members: (-members[0]["spread"], members[0]["group_rank"]))
    return ordered


def _page_name(number: int) -> str:
    return "report.html" if number == 1 else f"groups-{number:04d}.html"


def _nav(number: int, pages: int) -> str:
    links = []
    if number > 1:
        links.append(f'<a rel="prev" href="{_page_name(number - 1)}">previous groups</a>')
    if number < pages:
        links.append(f'<a rel="next" href="{_page_name(number + 1)}">next groups</a>')
    return f'<nav>page {number} of {pages} {" · ".join(links)}</nav>'


def _of_run(table: pa.Table, run_id: str | None) -> list[dict]:
    """The rows of ``run_id``, or every row when the report covers the whole store (None)."""
    return (table if run_id is None else table.filter(pc.equal(table.column("run_id"), run_id))).to_pylist()


def _run_cell(row: dict, run_id: str | None) -> str:
    return f"<td>{html.escape(row['run_id'])}</td>" if run_id is None else ""


def _timings_html(timings: pa.Table, run_id: str | None) -> str:
    rows = _of_run(timings, run_id)
    if not rows:
        return ("<p>No run of this store recorded stage timings (ingest batches do not).</p>" if run_id is None
                else "<p>No stage timings were recorded for this run (ingest batches record none).</p>")
    head = "<th>run</th>" if run_id is None else ""
    body = "".join(f"<tr>{_run_cell(r, run_id)}<th>{html.escape(r['stage'])}</th><td>{r['seconds']:.2f}</td></tr>"
                   for r in rows)
    return f"<table><tr>{head}<th>stage</th><th>seconds</th></tr>{body}</table>"


def _dedup_rule_html(rule: pa.Table, run_id: str | None) -> str:
    """Per bulk run: the direct t, the verified zone, its verifications, and the expected false merges."""
    rows = _of_run(rule, run_id)
    if not rows:
        return "<p>No bulk run recorded its dedup rule here.</p>"
    head = "<th>run</th>" if run_id is None else ""
    body = "".join(
        f"<tr>{_run_cell(r, run_id)}<td>{r['threshold_t']}</td>"
        f"<td>{r['verify_t'] if r['verify_t'] > r['threshold_t'] else 'none'}</td>"
        f"<td>{r['pairs_verified']}</td><td>{r['pairs_passed']}</td>"
        f"<td>{r['expected_false_merges_direct']:.2g}</td><td>{r['expected_false_merges_verified']:.2g}</td></tr>"
        for r in rows)
    return (f'<table class="dedup-rule"><tr>{head}<th>t (bits)</th><th>verified zone up to</th>'
            "<th>pairs verified</th><th>passed</th><th>expected false merges within t</th>"
            f"<th>through verification</th></tr>{body}</table>")


def _errors_html(errors: pa.Table, run_id: str | None) -> str:
    rows = _of_run(errors, run_id)
    if not rows:
        return "<p>No file failed in this store.</p>" if run_id is None else "<p>No file failed in this run.</p>"
    head = "<th>run</th>" if run_id is None else ""
    body = "".join(f"<tr>{_run_cell(r, run_id)}<th>{html.escape(r['stage'])}</th>"
                   f"<th>{html.escape(r['error_type'])}</th><td>{r['count']}</td></tr>" for r in rows)
    return f"<table><tr>{head}<th>stage</th><th>error</th><th>files</th></tr>{body}</table>"


def _runs_html(summary: pa.Table) -> str:
    """One row per committed run: the store's counts right after it."""
    columns = ("run_id", "version", "images", "stored", "duplicates", "errors", "bytes_saved")
    head = "".join(f"<th>{name}</th>" for name in columns)
    body = "".join("<tr>" + "".join(
        f"<td>{_human_bytes(r[name]) if name == 'bytes_saved' else html.escape(str(r[name]))}</td>"
        for name in columns) + "</tr>" for r in summary.to_pylist())
    return f'<table id="runs"><tr>{head}</tr>{body}</table>'


def report_title(run_id: str | None, runs: int) -> str:
    """The page title: one run's report, or the whole store's."""
    return f"imgdedup report: run {run_id}" if run_id is not None else \
        f"imgdedup report: the whole store ({runs} runs)"


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{_STYLE}</style></head><body>{body}</body></html>\n')


def write_html_report(page: ReportPage, out: Path, thumbnails: Thumbnails | None) -> list[Path]:
    """Write ``report.html`` and the further group pages into ``out``; return their paths.

    Parameters
    ----------
    page : ReportPage
    out : Path
        An existing folder.
    thumbnails : callable or None
        Image id -> JPEG bytes (decrypted with the key); None: no pixels at all.
    """
    headline = page.headline
    run_id = headline["run_id"]
    title = report_title(run_id, page.tables[rt.SUMMARY].num_rows)
    groups = _ordered_groups(page)
    pages = max(1, math.ceil(len(groups) / page.page_size))
    notice = "" if thumbnails is not None else f'<p class="notice" id="no-key">{NO_KEY_NOTICE}</p>'
    which = "groups marked for review (a member near t), widest spread first" if page.review_only else \
        "duplicate groups, largest first"
    written = []
    for number in range(1, pages + 1):
        chunk = groups[(number - 1) * page.page_size:number * page.page_size]
        parts = [f"<h1>{html.escape(title)}</h1>",
                 f"<p>Store version {headline['version']}; t = {page.threshold_t} of {page.hash_bits} bits.</p>"]
        if number == 1:
            parts += [
                _headline_html(headline), notice,
                '<div class="plots">',
                f"<figure>{savings_plot(page.tables[rt.SUMMARY])}</figure>",
                f"<figure>{distance_histogram(page.tables[rt.NEAREST], page.threshold_t, page.hash_bits)}</figure>",
                f"<figure>{class_size_plot(page.tables[rt.CLASSES])}</figure>",
                "</div>",
                "<h2>Runs</h2>", _runs_html(page.tables[rt.SUMMARY]),
                "<h2>Time per stage</h2>", _timings_html(page.tables[rt.TIMINGS], run_id),
                "<h2>Dedup rule</h2>", _dedup_rule_html(page.tables[rt.DEDUP_RULE], run_id),
                "<h2>Errors by type</h2>", _errors_html(page.tables[rt.ERRORS_BY_TYPE], run_id),
            ]
        else:
            parts.append(notice)
        parts += [f'<h2 id="groups">{len(groups)} {which}</h2>', _nav(number, pages),
                  *(_group_html(members, page, thumbnails) for members in chunk), _nav(number, pages)]
        path = out / _page_name(number)
        path.write_text(_document(title, "".join(parts)), encoding="utf-8")
        written.append(path)
    for stale in sorted(out.glob("groups-*.html")):
        if stale not in written:
            stale.unlink()
    return written
