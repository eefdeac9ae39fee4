"""The Gradio page of ``captioner serve``: tabs over :class:`captioner.web.toolkit.Toolkit`.

Every handler is a thin call into the toolkit (and through it the API); what it shows is
built by :mod:`captioner.report_pages`, the same fragments the HTML pages of the CLI use. A
problem with what was given (an unreadable upload, a bad value) comes back as one line in
the page; anything else is logged with its traceback on the server, and the page says only
that it failed. Attacks and visualisations share one slot (one at a time), captions have
their own, so a long attack never holds up captioning.

Gradio is imported by :func:`build_app` only: the other commands never pay for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..decoding.settings import GUIDES, MAX_BEAM_SIZE, METHODS, methods
from ..errors import UserError
from ..pages import esc
from ..report_pages import SHEET_STYLE, attack_body, caption_entry, describe_record, file_thumbnail
from .toolkit import Toolkit, split_list

log = logging.getLogger("captioner.web")

#: Concurrent requests per kind: captions are short; attacks and visualisations take one slot together.
CAPTION_CONCURRENCY = 4
HEAVY_CONCURRENCY = 1

PAGE_CSS = SHEET_STYLE + """
.error { color: #a00; font-weight: bold; } .note { color: #666; }
td { vertical-align: top; padding: .3em; }
"""


def message(error: BaseException, upload: str | None = None) -> str:
    """What the page shows for a failed request: the user's error as it is (naming an ``upload``
    by its file name, not where the server keeps it), else a generic line."""
    if isinstance(error, UserError):
        text = str(error)
        if upload:
            text = text.replace(upload, Path(upload).name)
        return f'<p class="error">error: {esc(text)}</p>'
    return '<p class="error">error: the request failed on the server (see its log); the page still works</p>'


def guarded(handler: Callable, outputs: int) -> Callable:
    """``handler`` that answers with :func:`message` (and empty other outputs) instead of raising;
    its first argument, when it is a string, is the uploaded file."""
    def run(*args):
        try:
            return handler(*args)
        except Exception as error:  # the server keeps serving whatever one request did
            if not isinstance(error, UserError):
                log.exception("request failed")
            shown = message(error, args[0] if args and isinstance(args[0], str) else None)
            return (shown, *(None,) * (outputs - 1)) if outputs > 1 else shown
    run.__name__ = handler.__name__
    return run


def upload_box(gr, elem_id: str, examples: list[str]):
    """A file box for one image, with the example photos to pick from under it. A file box, not
    an image box: the upload reaches the server as sent, and is read by the CLI's own code."""
    box = gr.File(label="Image", file_types=["image"], type="filepath", elem_id=elem_id)
    if examples:
        gr.Examples(examples, inputs=box, label="Examples")
    return box


def explain_available() -> bool:
    """Whether the Explain tab can work: its saliency maps need Captum (the ``web`` extra has it)."""
    import importlib.util

    return importlib.util.find_spec("captum") is not None


def build_app(toolkit: Toolkit, examples: list[str] = ()):
    """The Blocks app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    defaults = toolkit.captioner.decoding

    def caption(path, method, beam_size, num_captions, guide, threshold, include):
        if not path:
            return '<p class="error">error: upload an image first (or pick an example)</p>', None
        record = toolkit.caption(path, include=split_list(include), method=method, beam_size=int(beam_size),
                                 num_captions=int(num_captions), guide=guide, guide_threshold=float(threshold))
        record["path"] = Path(path).name  # the uploaded file's name, not where the server keeps it
        if "error" in record:
            record["error"] = record["error"].replace(path, record["path"])
        return caption_entry(record, file_thumbnail(path, 320, toolkit.max_pixels)), record

    def visualize(kind, classes, layer, channels, steps, size):
        result = toolkit.visualize(kind, classes, layer, channels, int(steps), int(size))
        rows = "".join(f"<li>{esc(describe_record(r))}</li>" for r in result.records)
        return f"<ul>{rows}</ul>", result.image()

    def explain(path, method, guide, include, maps):
        if not path:
            return '<p class="error">error: upload an image first (or pick an example)</p>'
        from ..explain.page import explanation_body, pictures

        explanation = toolkit.explain(path, split_list(include), maps or (), method=method, guide=guide)
        explanation.source = Path(path).name
        if explanation.error:
            return f'<p class="error">error: {esc(explanation.error.replace(path, explanation.source))}</p>'
        return explanation_body(explanation, pictures(explanation))

    def attack(path, victim, method, eps, steps, target):
        if not path:
            return '<p class="error">error: upload an image first (or pick an example)</p>'
        outcome = toolkit.attack(path, victim, method, eps, int(steps), target)
        outcome.record["image"] = Path(path).name
        return attack_body(outcome.record, outcome.original, outcome.adversarial, outcome.perturbation, 300)

    with gr.Blocks(title="captioner", analytics_enabled=False) as app:
        gr.Markdown("# captioner\nCaption an image, see what the encoder sees, attack it. "
                    "Everything runs on this machine.")
        with gr.Tab("Caption", id="caption"):
            with gr.Row():
                with gr.Column():
                    image = upload_box(gr, "caption-upload", examples)
                    method = gr.Radio(list(METHODS), value=defaults.method, label="Method")
                    beam = gr.Slider(1, min(MAX_BEAM_SIZE, 20), value=defaults.beam_size, step=1, label="Beam size")
                    count = gr.Slider(1, min(MAX_BEAM_SIZE, 20), value=3, step=1, label="Captions (n-best)")
                    guide = gr.Radio(list(GUIDES), value=defaults.guide, label="Guide (ImageNet classifier)")
                    threshold = gr.Slider(0, 1, value=defaults.guide_threshold, step=0.05, label="Guide threshold")
                    include = gr.Textbox(label="Include (comma-separated; word|alternative)", elem_id="include")
                    go = gr.Button("Caption", variant="primary", elem_id="caption-button")
                with gr.Column():
                    shown = gr.HTML(elem_id="caption-result")
                    record = gr.JSON(label="Record (as captioner caption --jsonl writes it)")
            go.click(guarded(caption, 2), [image, method, beam, count, guide, threshold, include], [shown, record],
                     api_name="caption", concurrency_limit=CAPTION_CONCURRENCY, concurrency_id="caption")
        if explain_available():
            from ..explain import METHODS as SALIENCY

            with gr.Tab("Explain", id="explain"):
                with gr.Row():
                    with gr.Column(scale=1):
                        explained_image = upload_box(gr, "explain-upload", examples)
                        explain_method = gr.Radio(list(methods(deterministic=True)), value=defaults.method,
                                                  label="Method")
                        explain_guide = gr.Radio(list(GUIDES), value=defaults.guide, label="Guide")
                        explain_include = gr.Textbox(label="Include (comma-separated; word|alternative)")
                        maps = gr.CheckboxGroup(list(SALIENCY), value=["gradcam"], label="Saliency maps")
                        why = gr.Button("Explain", variant="primary", elem_id="explain-button")
                    with gr.Column(scale=3):
                        explained = gr.HTML(elem_id="explain-result")
                why.click(guarded(explain, 1), [explained_image, explain_method, explain_guide, explain_include, maps],
                          explained, api_name="explain", concurrency_limit=HEAVY_CONCURRENCY, concurrency_id="heavy")
        with gr.Tab("Visualise", id="visualise"):
            with gr.Row():
                with gr.Column():
                    kind = gr.Radio(["class", "filters"], value="class", label="What")
                    classes = gr.Textbox(value="espresso", label="Classes (names or indices, comma-separated)")
                    layer = gr.Dropdown(toolkit.layers(), value="features.4.0", label="Layer (filters)")
                    channels = gr.Textbox(value="0:8", label="Channels (filters): 0:8, 3 or 0,5,9")
                    steps = gr.Slider(1, 256, value=64, step=1, label="Steps")
                    size = gr.Slider(32, 224, value=128, step=16, label="Size (filters, px)")
                    draw = gr.Button("Visualise", variant="primary", elem_id="visualise-button")
                with gr.Column():
                    described = gr.HTML(elem_id="visualise-result")
                    picture = gr.Image(label="Images", type="pil", interactive=False, elem_id="visualise-image")
            draw.click(guarded(visualize, 2), [kind, classes, layer, channels, steps, size], [described, picture],
                       api_name="visualize", concurrency_limit=HEAVY_CONCURRENCY, concurrency_id="heavy")
        with gr.Tab("Attack", id="attack"):
            with gr.Row():
                with gr.Column(scale=1):
                    target_image = upload_box(gr, "attack-upload", examples)
                    victim = gr.Radio(["classifier", "captioner"], value="classifier", label="Attack")
                    attack_method = gr.Radio(["fgsm", "bim", "pgd"], value="fgsm", label="Method")
                    eps = gr.Textbox(value="2/255", label="eps (L-inf, pixels: 2/255 or 0.01)")
                    attack_steps = gr.Slider(1, 50, value=10, step=1, label="Steps (bim, pgd)")
                    target = gr.Textbox(label="Target (a class, or a caption; empty: untargeted)")
                    run = gr.Button("Attack", variant="primary", elem_id="attack-button")
                with gr.Column(scale=3):
                    attacked = gr.HTML(elem_id="attack-result")
            run.click(guarded(attack, 1), [target_image, victim, attack_method, eps, attack_steps, target], attacked,
                      api_name="attack", concurrency_limit=HEAVY_CONCURRENCY, concurrency_id="heavy")
    return app


def theme():
    """Gradio's default look with the system's fonts (the default fetches web fonts from the internet)."""
    import gradio as gr

    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
