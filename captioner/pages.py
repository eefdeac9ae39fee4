"""Self-contained HTML pages: every picture inline as a data URI, no scripts or styles fetched.

A page made here opens from a file, offline, and asks the network for nothing. Text is
always escaped; the building blocks return HTML strings that :func:`document` wraps into a
page and :func:`write_page` publishes atomically.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence

from PIL import Image

from .fileio import write_text_atomic

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .4em; vertical-align: top; text-align: center; }
figcaption { font-size: .85em; max-width: 16em; margin: .2em auto; }
img { image-rendering: auto; }
.error { color: #a00; } .note { color: #666; font-size: .9em; }
"""


def esc(text) -> str:
    """``text`` as HTML text (quotes escaped too, so it is safe inside attributes)."""
    return html.escape(str(text), quote=True)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_uri(image: Image.Image | bytes, mime: str = "image/png") -> str:
    """A ``data:`` URI of ``image`` (a PIL image, saved as PNG, or the bytes of an encoded file)."""
    data = png_bytes(image) if isinstance(image, Image.Image) else bytes(image)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail(image: Image.Image, side: int = 160) -> Image.Image:
    """A copy at most ``side`` pixels on its longer side, in RGB (small pages for big folders)."""
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def img(image: Image.Image | bytes, alt: str, width: int | None = None, mime: str = "image/png") -> str:
    size = f' width="{int(width)}"' if width else ""
    return f'<img src="{data_uri(image, mime)}" alt="{esc(alt)}"{size}>'


def figure(image: Image.Image | bytes, caption: str, width: int | None = None) -> str:
    """An inline image with an escaped caption under it."""
    return f"<figure>{img(image, caption, width)}<figcaption>{esc(caption)}</figcaption></figure>"


def table(header: Sequence[str], rows: Iterable[Sequence], numeric: Sequence[int] = (), raw: bool = False) -> str:
    """A table; cells are escaped unless ``raw`` (cells already HTML); columns in ``numeric`` align right."""
    numeric = set(numeric)

    def cell(tag: str, i: int, value) -> str:
        kind = ' class="num"' if i in numeric else ""
        return f"<{tag}{kind}>{value if raw and tag == 'td' else esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def document(title: str, body: str, style: str = "") -> str:
    """A whole page around ``body`` (HTML). The content security policy forbids fetching anything:
    images may only be data URIs, and there are no scripts."""
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{STYLE}{style}</style>\n</head>\n"
        f"<body>\n<h1>{esc(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def write_page(path: str | os.PathLike, title: str, body: str, style: str = "") -> None:
    """Writes the page atomically (a crash leaves the old file, or none)."""
    write_text_atomic(path, document(title, body, style))
