"""``captioner serve``: the toolkit as a web page (Gradio), on this machine only by default.

``pip install 'captioner[web]'`` installs Gradio. The page binds to 127.0.0.1, never asks for
a public share link, and sends no analytics; :mod:`captioner.web.toolkit` holds what the
page does, :mod:`captioner.web.app` the page.
"""

from __future__ import annotations

import os

from ..data.images import DEFAULT_MAX_PIXELS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: The largest upload the page accepts (the pixel limit is the CLI's ``--max-pixels``).
DEFAULT_MAX_UPLOAD_MB = 50
#: Requests waiting in the queue beyond which new ones are turned away (the server stays responsive).
MAX_QUEUE = 64


def example_images() -> list[str]:
    """The bundled example photos, when captioner runs from a checkout (``examples/``)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "examples"
    return sorted(str(p) for p in folder.glob("*.jpg")) if folder.is_dir() else []


def create_app(checkpoint=None, device=None, max_pixels: int = DEFAULT_MAX_PIXELS, examples=None):
    """The Gradio app and its :class:`~captioner.web.toolkit.Toolkit`, queued, not launched."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported
    from .app import CAPTION_CONCURRENCY, build_app
    from .toolkit import Toolkit

    toolkit = Toolkit(checkpoint, device, max_pixels)
    app = build_app(toolkit, example_images() if examples is None else examples)
    app.queue(default_concurrency_limit=CAPTION_CONCURRENCY, max_size=MAX_QUEUE)
    return app, toolkit


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, checkpoint=None, device=None,
          max_pixels: int = DEFAULT_MAX_PIXELS, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          block: bool = True):
    """Start the page at http://HOST:PORT/ (``block``: until Ctrl-C); returns the app."""
    from .app import PAGE_CSS, theme

    app, _ = create_app(checkpoint, device, max_pixels)
    examples = example_images()
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
               max_file_size=f"{max_upload_mb}mb", show_error=False, ssr_mode=False, quiet=not block,
               theme=theme(), css=PAGE_CSS, allowed_paths=[os.path.dirname(examples[0])] if examples else None)
    return app
