"""A tiny document model for the run report, rendered to Markdown (``report.md``, images as relative links) and
to one self-contained HTML file (``report.html``, images inline as ``data:image/png;base64`` URIs, so the file
can be mailed or archived alone).

Hand-written rather than a Markdown library: the report needs headings, paragraphs, tables and images only, and
rendering both formats from one model keeps them identical without a new dependency.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Document", "Heading", "Para", "Table", "Image", "render_markdown", "render_html"]


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Para:
    text: str
    note: bool = False       # a small-print remark


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Image:
    path: Path               # absolute path of a PNG
    rel: str                 # the link from report.md
    caption: str = ""
    half: bool = False       # HTML: half the page width (two side by side), e.g. a gallery of Grad-CAM images


@dataclass
class Document:
    title: str
    blocks: list[Any] = field(default_factory=list)

    def add(self, *blocks: Any) -> None:
        self.blocks.extend(blocks)


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [f"*{b.text}*" if b.note else b.text, ""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"**{b.caption}**", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.caption}]({b.rel})", ""]
            if b.caption:
                out += [f"*{b.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#1b1f24;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #d0d7de;padding-bottom:6px}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:1.05em;margin-top:1.2em}
table{border-collapse:collapse;margin:8px 0 14px;font-size:0.9em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-weight:600;padding-bottom:4px}
figure{margin:10px 0 18px}
figure img{max-width:100%;border:1px solid #e1e4e8}
figcaption,.note{color:#57606a;font-size:0.88em}
nav{font-size:0.9em;background:#f6f8fa;padding:8px 12px;border:1px solid #d0d7de}
nav a{margin-right:12px}
"""


_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+( %)?$")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) or bool(_NUMBER.match(str(v).strip()))


def render_html(doc: Document) -> str:
    esc = html.escape
    toc = [b for b in doc.blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(doc.title)}</title>", f"<style>{_CSS}</style></head><body>", f"<h1>{esc(doc.title)}</h1>"]
    if toc:
        out.append("<nav>" + "".join(f'<a href="#{esc(h.anchor)}">{esc(h.text)}</a>' for h in toc) + "</nav>")
    for b in doc.blocks:
        if isinstance(b, Heading):
            anchor = f' id="{esc(b.anchor)}"' if b.anchor else ""
            out.append(f"<h{b.level}{anchor}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f'<p class="note">{esc(b.text)}</p>' if b.note else f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Table):
            rows = ["<table>"]
            if b.caption:
                rows.append(f"<caption>{esc(b.caption)}</caption>")
            if any(str(h) for h in b.header):       # a key-value table has no header row
                rows.append("<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in b.header) + "</tr>")
            grid = any(str(h) for h in b.header)    # numbers right-aligned in a grid, not in a key-value list
            for row in b.rows:
                rows.append("<tr>" + "".join(
                    f'<td class="num">{esc(str(c))}</td>' if grid and _is_num(c) else f"<td>{esc(str(c))}</td>"
                    for c in row) + "</tr>")
            rows.append("</table>")
            out.append("".join(rows))
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            style = ' style="display:inline-block;width:48%;vertical-align:top;margin-right:1%"' if b.half else ""
            out.append(f'<figure{style}><img alt="{esc(b.caption or b.rel)}" src="data:image/png;base64,{data}">'
                       + (f"<figcaption>{esc(b.caption)}</figcaption>" if b.caption else "") + "</figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
