"""Results as pages: the contact sheet of ``captioner caption --html``, the pages of an attack,
a robustness report and a visualisation, and the per-image page of ``captioner evaluate --html``.

Every page is built from the records the commands already make (``CaptionResult``, the
attack record, the robustness report, ``Visualization``, the evaluation summary) with the
blocks of :mod:`captioner.pages`: self-contained, nothing fetched, text escaped. The web
page (:mod:`captioner.web`) shows a caption with :func:`caption_entry`, the fragment the
contact sheet is made of.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .fileio import AtomicLineWriter
from .pages import document, esc, figure, img, table, thumbnail, write_page

#: The longer side of a contact-sheet thumbnail, in pixels (JPEG, a few kB each).
THUMBNAIL_SIDE = 160

SHEET_STYLE = """
.entry { display: flex; gap: 1em; align-items: flex-start; border-top: 1px solid #ddd; padding: .6em 0; }
.entry img { flex: none; } .entry ol { margin: .2em 0; padding-left: 1.4em; }
.path { font-family: monospace; word-break: break-all; } .score { color: #666; font-size: .85em; }
.forced { font-size: .9em; margin: .2em 0; }
"""


def jpeg_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """A small JPEG of ``image`` for a page (a folder of photos stays a page of a few kB each)."""
    buffer = io.BytesIO()
    thumbnail(image, side).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def file_thumbnail(path: str | os.PathLike, side: int = THUMBNAIL_SIDE,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """The thumbnail of an image file, or None when it cannot be read (its error is reported elsewhere)."""
    try:
        return jpeg_thumbnail(load_image(path, max_pixels=max_pixels), side)
    except ImageLoadError:
        return None


def describe_forced(forced: dict) -> str:
    """One forced constraint (``Forced.to_dict()``) in words: ``coffee (classifier 94%: espresso 94%)``."""
    if forced.get("source") == "include":
        return f"{forced['words']} (--include)"
    classes = ", ".join(f"{c['label']} {100 * c['probability']:.0f}%" for c in forced.get("classes", []))
    sure = f" {100 * forced['probability']:.0f}%" if "probability" in forced else ""
    return f"{forced['words']} (ImageNet classifier{sure}: {classes})" if classes else f"{forced['words']} ({forced['source']}{sure})"


def caption_entry(record: dict, thumb: bytes | None = None, name: str | None = None) -> str:
    """One image of a contact sheet: its thumbnail, the n-best captions with their scores, what
    was forced and why, or the error. ``record``: ``CaptionResult.to_dict()``."""
    path = f'<div class="path">{esc(record["path"] if name is None else name)}</div>'
    picture = img(thumb, record["path"], mime="image/jpeg") if thumb else ""
    if "error" in record:
        return f'<div class="entry">{picture}<div>{path}<p class="error">error: {esc(record["error"])}</p></div></div>'
    captions = "".join(
        f'<li><span class="caption">{esc(c["caption"])}</span> <span class="score">score {c["score"]:.4f}, '
        f'log p {c["log_prob"]:.4f}{", truncated" if c.get("truncated") else ""}'
        f'{", misses " + str(c["unmet"]) + " forced" if c.get("unmet") else ""}</span></li>'
        for c in record["captions"])
    forced = "".join(f'<p class="forced">forced: {esc(describe_forced(f))}</p>' for f in record.get("forced", []))
    note = f'<p class="note">{esc(record["note"])}</p>' if record.get("note") else ""
    return f'<div class="entry">{picture}<div>{path}<ol>{captions}</ol>{forced}{note}</div></div>'


class CaptionSheet:
    """The contact sheet of ``captioner caption --html``, written as the run goes into a
    temporary file that replaces the target only when the run completes (as ``--jsonl``).
    Thumbnails are small JPEGs, so the sheet of a big folder stays a few kB per image."""

    def __init__(self, path: str | os.PathLike, title: str = "captions", max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = max_pixels
        self.counts = {"images": 0, "errors": 0}
        self.writer = AtomicLineWriter(path)
        head = document(title, "\0", SHEET_STYLE)
        self._head, self._tail = head.split("\0")
        self.writer.write(self._head)

    def add(self, record: dict) -> None:
        """One image (``CaptionResult.to_dict()``); its thumbnail is read from its file."""
        self.counts["images"] += 1
        self.counts["errors"] += "error" in record
        thumb = None if "error" in record else file_thumbnail(record["path"], max_pixels=self.max_pixels)
        self.writer.write(caption_entry(record, thumb))

    def __enter__(self) -> "CaptionSheet":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.writer.discard()
            return
        counts = self.counts
        summary = f'<p class="note">{counts["images"]} images, {counts["errors"]} could not be read</p>'
        self.writer.write(summary + self._tail)
        self.writer.close()


# -- attacks ---------------------------------------------------------------------------------
def _predictions(value) -> str:
    """A caption, or top-k classes as lines ``94.3% espresso``."""
    if isinstance(value, str):
        return f'<p class="caption">{esc(value)}</p>'
    return "<br>".join(f"{100 * r['probability']:.1f}% {esc(r['label'])}" for r in value)


def attack_body(record: dict, original: bytes, adversarial: bytes, perturbation: bytes, width: int = 320) -> str:
    """The clean image, the amplified perturbation and the adversarial PNG side by side, with the
    captions or classes before and after and whether the saved PNG still fools the model."""
    goal = record.get("target_caption") or record.get("target")
    what = f"{record['method'].upper()}, {'target ' + repr(goal) if goal else 'untargeted'}, eps {record['eps_text']}"
    panels = [("clean image", original, record["before"]),
              (f"perturbation (amplified: -eps black, +eps white), L-inf {record['linf_255']:g}/255, "
               f"L2 {record['l2']:g}", perturbation, None),
              ("adversarial (saved 8-bit PNG)", adversarial, record["after"])]
    cells = "".join(f"<td>{img(data, title, width)}<p><b>{esc(title)}</b></p>"
                    f"{'' if shown is None else _predictions(shown)}</td>" for title, data, shown in panels)
    verdict = (f"fools the model: {'yes' if record['fooled'] else 'no'} (float image), "
               f"{'yes' if record['saved_fooled'] else 'no'} (saved 8-bit PNG"
               + (f", {record['extra_steps']} extra steps)" if record.get("extra_steps") else ")"))
    return (f'<p>{esc(record["image"])}: {esc(what)}</p><table><tr>{cells}</tr></table>'
            f'<p class="verdict"><b>{esc(verdict)}</b></p>')


def write_attack_page(record: dict, path: str | os.PathLike) -> None:
    """The page of one attacked image (``record``: the attack's record, with its saved files)."""
    files = record["files"]
    original = jpeg_thumbnail(load_image(record["image"]), 640)
    write_page(path, f"attack on {Path(record['image']).name}",
               attack_body(record, original, Path(files["adversarial"]).read_bytes(),
                           Path(files["perturbation"]).read_bytes()))


def write_report_page(report: dict, path: str | os.PathLike, plot: str | os.PathLike | None = None) -> None:
    """The robustness report as a page: the curves, the table, and each image with its clean
    prediction and its prediction at every eps."""
    from .attacks.report import report_columns

    columns = report_columns(report)
    body = [f"<p>{esc(report['method'].upper())}, untargeted, {report['images']} images; "
            "saved_*: rounded to 8 bits as in a PNG</p>"]
    if plot:
        body.append(img(Path(plot).read_bytes(), "accuracy against eps", 800))
    body.append(table(["eps", *columns], [[row["eps_text"], *(f"{row[c]:.2f}" for c in columns)]
                                          for row in report["rows"]], numeric=range(1, len(columns) + 1)))
    body += [f'<p class="note">{esc(note)}</p>' for note in report["notes"]]
    body += [f'<p class="error">skipped {esc(s["path"])}: {esc(s["error"])}</p>' for s in report["skipped"]]
    eps_texts = [row["eps_text"] for row in report["rows"]]
    rows = []
    for entry in report["per_image"]:
        thumb = file_thumbnail(entry["path"], 96)
        picture = img(thumb, entry["path"], mime="image/jpeg") if thumb else ""
        rows.append([f"{picture}<br>{esc(Path(entry['path']).name)}", esc(entry["clean"]),
                     *(esc(entry.get(e, "")) for e in eps_texts)])
    body.append(table(["image", "clean", *(f"eps {e}" for e in eps_texts)], rows, raw=True))
    write_page(path, f"robustness of {report['model'] or 'the model'}", "\n".join(body))


# -- visualisation -----------------------------------------------------------------------------
def describe_record(record: dict) -> str:
    """A visualisation record in words: the probability of a class image, else its values."""
    if "probability" in record:
        return (f"{record['class']}: p={record['probability']:.4f} (logit {record['logit']:.2f}); "
                f"top-1 {record['top1']} ({record['top1_probability']:.4f})")
    return ", ".join(f"{k} {v}" for k, v in record.items())


def write_visualization_page(result, path: str | os.PathLike, title: str = "visualisation") -> None:
    """Each image of a :class:`captioner.visualization.Visualization` with its label and record
    (a class image's probability as the saved PNG is classified, a filter's activation)."""
    from .data.eightbit import to_pil

    figures = [figure(to_pil(image), f"{label}: {describe_record(record)}", max(128, image.shape[-1]))
               for image, label, record in zip(result.images, result.labels, result.records)]
    body = f"<p>objective: {esc(result.objective)}</p>" + "".join(figures)
    write_page(path, title, body)


# -- evaluation --------------------------------------------------------------------------------
def write_evaluation_page(summary: dict, per_image: Sequence[dict], path: str | os.PathLike,
                          show: int = 50) -> None:
    """The metrics table and, for the ``show`` best and worst images by the first system's
    CIDEr-D, each system's caption beside the references. ``per_image``: dicts with ``path``,
    ``references``, ``captions`` (system -> caption) and ``cider`` (system -> CIDEr-D)."""
    systems = list(summary["systems"])
    metrics = list(dict.fromkeys(m for s in summary["systems"].values() for m in s["scores"]))
    body = [f"<p>{esc(summary['split'])} split, {summary['images']} images, scores x100</p>",
            table(["system", *metrics], [[name, *(f"{result['scores'].get(m, float('nan')):.1f}" for m in metrics)]
                                         for name, result in summary["systems"].items()],
                  numeric=range(1, len(metrics) + 1))]
    notes = dict.fromkeys(n for s in summary["systems"].values() for n in s.get("notes", []))
    body += [f'<p class="note">{esc(n)}</p>' for n in notes]
    key = systems[0]
    ranked = sorted(per_image, key=lambda item: -item["cider"][key])
    picks = [("best", ranked[:show])]
    if len(ranked) > show:
        picks.append(("worst", ranked[-show:][::-1] if len(ranked) >= 2 * show else ranked[show:][::-1]))
    for name, items in picks:
        body.append(f"<h2>{len(items)} {name} by CIDEr-D of {esc(key)}</h2>")
        rows = []
        for item in items:
            thumb = file_thumbnail(item["path"], 96)
            picture = img(thumb, item["path"], mime="image/jpeg") if thumb else ""
            captions = "<br>".join(f"<b>{esc(s)}</b> ({item['cider'][s]:.1f}): {esc(item['captions'][s])}"
                                   for s in systems)
            rows.append([f"{picture}<br>{esc(Path(item['path']).name)}", captions,
                         "<br>".join(esc(r) for r in item["references"])])
        body.append(table(["image", "captions (CIDEr-D)", "references"], rows, raw=True))
    write_page(path, f"evaluation: {summary.get('checkpoint', '')}", "\n".join(body))
