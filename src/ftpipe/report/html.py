"""The report's HTML pieces: escaped tables, inline images, sections and the page around them.

Everything is inline (CSS, images as base64 PNG), so one file opens anywhere: in a browser from
disk, attached to an email, or in the KFP UI, which shows an HTML artifact in a frame. Wide
content (many classes, long texts) scrolls inside its own box, so the page never grows wider
than the window.
"""

from __future__ import annotations

import base64
import html
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CSS = """
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 1.6em; margin: 0.4em 0; }
h2 { font-size: 1.3em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 1.6em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
nav a { margin-right: 12px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 0.86em; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
td { overflow-wrap: break-word; max-width: 640px; }
th { background: #f6f8fa; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { display: inline-block; margin: 4px 12px 12px 0; max-width: 100%; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: 0.85em; color: #59636e; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; white-space: pre-wrap;
      overflow-wrap: anywhere; }
.verdict { font-size: 1.1em; font-weight: 600; }
.good { color: #1a7f37; } .bad { color: #cf222e; }
.muted { color: #59636e; font-size: 0.9em; }
"""


def esc(value: Any) -> str:
    """`value` as text safe inside HTML."""
    return html.escape(str(value))


def cell(value: Any) -> str:
    """A table cell: numbers right-aligned (floats to 4 significant places), text escaped."""
    if isinstance(value, bool) or value is None:
        return f"<td>{esc('' if value is None else value)}</td>"
    if isinstance(value, numbers.Integral):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, numbers.Real):
        return f'<td class="num">{value:.4g}</td>'
    return f"<td>{esc(value)}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table in a box that scrolls sideways when it is wider than the page."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def image(png: bytes | Path, caption: str, width: int = 560) -> str:
    """A PNG inline as base64, at most `width` CSS pixels wide (less on a narrow page)."""
    data = png.read_bytes() if isinstance(png, Path) else png
    source = base64.b64encode(data).decode("ascii")
    return (
        f'<figure style="width:{width}px"><img alt="{esc(caption)}" '
        f'src="data:image/png;base64,{source}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def figure_png(figure: Any) -> bytes:
    """A matplotlib Figure as PNG bytes (96 dpi: crisp at the width `image` shows it)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    return buffer.getvalue()


def paragraph(text: str, kind: str = "") -> str:
    """One escaped paragraph, optionally with a class (verdict, muted)."""
    attribute = f' class="{kind}"' if kind else ""
    return f"<p{attribute}>{esc(text)}</p>"


def section(anchor: str, title: str, body: str) -> str:
    """A titled section with an anchor the page's navigation links to."""
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]], intro: str = "") -> str:
    """The whole page: title, links to each (anchor, title, html) section, then the sections."""
    links = "".join(f'<a href="#{anchor}">{esc(name)}</a>' for anchor, name, _ in sections)
    bodies = "".join(section(*s) for s in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1>{intro}<nav>{links}</nav>{bodies}</main></body></html>\n"
    )
