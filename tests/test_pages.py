"""captioner.pages: escaped text, inline images that decode back, nothing fetched."""

import base64
import io
import re

from PIL import Image

from captioner import pages


def test_text_is_escaped_everywhere():
    nasty = '<script>alert("x")</script> & \'q\''
    page = pages.document(nasty, pages.table([nasty], [[nasty]]) + pages.figure(Image.new("RGB", (2, 2)), nasty))
    assert "<script>" not in page
    # the title, the heading, the table header and cell, the figure caption and its alt text
    assert page.count("&lt;script&gt;") == 6
    assert 'alt="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;"' in page


def test_inline_image_round_trips():
    image = Image.new("RGB", (5, 3))
    image.putpixel((4, 2), (250, 10, 128))
    match = re.search(r'src="data:image/png;base64,([^"]+)"', pages.img(image, "x"))
    back = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert back.size == (5, 3) and back.getpixel((4, 2)) == (250, 10, 128)


def test_page_asks_for_nothing_outside_itself():
    page = pages.document("t", pages.img(Image.new("RGB", (1, 1)), "a"))
    assert "default-src 'none'" in page
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_thumbnail_keeps_aspect_and_bounds_side():
    small = pages.thumbnail(Image.new("RGBA", (640, 480)), side=160)
    assert small.size == (160, 120) and small.mode == "RGB"


def test_write_page_publishes_whole_file(tmp_path):
    target = tmp_path / "p.html"
    pages.write_page(target, "T", "<p>hi</p>")
    text = target.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]
