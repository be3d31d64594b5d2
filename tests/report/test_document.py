"""The report's document model: Markdown and HTML renderings of the same blocks (escaping, inline PNGs)."""
from __future__ import annotations

import base64

from mednas_nni.report.document import Document, Heading, Image, Para, Table, render_html, render_markdown


def _png(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    path = tmp_path / "fig.png"
    fig.savefig(path)
    return path


def test_markdown_and_html_render_the_same_blocks(tmp_path):
    png = _png(tmp_path)
    doc = Document("run <x>")
    doc.add(Heading("Summary", anchor="summary"), Para("a | b < c"), Para("small print", note=True),
            Table(["class", "sensitivity"], [["normal, benign", 0.5], ["<script>", "1,722"]], caption="per class"),
            Table(["", ""], [["seed", 0]]), Image(png, "fig.png", "a figure"))
    md = render_markdown(doc)
    assert md.startswith("# run <x>\n") and "## Summary" in md and "*small print*" in md
    assert "| <script> | 1,722 |" in md and "a \\| b" not in md        # only table cells escape pipes
    assert "| normal, benign | 0.5 |" in md and "![a figure](fig.png)" in md
    html = render_html(doc)
    assert "<script>" not in html and "&lt;script&gt;" in html and "a | b &lt; c" in html
    assert '<a href="#summary">Summary</a>' in html and '<h2 id="summary">' in html
    assert '<td class="num">1,722</td>' in html and "<td>0</td>" in html     # key-value rows stay left-aligned
    assert html.count("<th>") == 2                                            # no header row for key-value tables
    data = html.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(data) == png.read_bytes()
    assert "fig.png" not in html.replace('alt="a figure"', "")                 # no link to the file itself
