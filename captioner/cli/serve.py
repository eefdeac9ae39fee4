"""``captioner serve``: the web page (needs the ``web`` extra: ``pip install 'captioner[web]'``)."""

from __future__ import annotations

from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import ArgumentError


def add_parser(subparsers) -> None:
    from ..web import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT

    p = subparsers.add_parser(
        "serve", help="a web page for captioning, visualisation and attacks (Gradio)",
        description="Serve the toolkit as a web page on this machine: Caption, Visualise and Attack tabs. "
                    "Binds to 127.0.0.1 unless --host says otherwise; never shares publicly; no analytics.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s: this machine only; "
                                                        "0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    p.add_argument("--checkpoint", help="checkpoint (default: the bundled default model)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help="refuse larger uploads (default %(default)s MB)")
    p.set_defaults(run=run)


def run(args) -> int:
    if not 0 < args.port < 65536:
        raise ArgumentError(f"--port must be between 1 and 65535, got {args.port}")
    try:
        import gradio  # noqa: F401  (only to say what is missing)
    except ImportError:
        raise ArgumentError("captioner serve needs Gradio: pip install 'captioner[web]'") from None
    from ..web import serve

    print(f"captioner serve: http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    serve(args.host, args.port, args.checkpoint, args.device, args.max_pixels, args.max_upload_mb)
    return 0
