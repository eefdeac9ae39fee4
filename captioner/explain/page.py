"""The pictures and the page of an :class:`captioner.explain.Explanation`: saliency overlays,
the LSTM's heat maps, a self-contained HTML page, and the files ``write`` leaves."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.eightbit import save_png, to_pil
from ..fileio import atomic_write, write_json_atomic
from ..pages import document, esc, figure, table, write_page
from .record import TOP_UNITS
from .saliency import PIXEL_METHODS

TITLES = {"gradcam": "Grad-CAM", "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated Gradients"}
MEANING = (
    "Show-and-Tell has no attention: the image enters the LSTM once, as its initial state, and no map here is where "
    "the model \"looked\". Each map is a gradient story about this model: Grad-CAM weighs the cells of the encoder's "
    "last feature map by how much the word's log-probability rises with them; SmoothGrad shows where a small change "
    "of the pixels would change that log-probability most (averaged over noisy copies); Integrated Gradients adds up "
    "those gradients on the way from a black image. Each map is scaled to its own maximum, so compare shapes, not "
    "colours, across words. The tests check that the maps depend on the model's weights and on the word, and peak "
    "where a hand-built model reads its word from (the sanity checks of Adebayo et al., 2018)."
)


def overlay(image: Image.Image, saliency: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``saliency`` (h, w, >= 0) scaled to its maximum, upsampled to the image, in the jet
    colour map over the image."""
    from matplotlib import colormaps

    values = torch.as_tensor(np.asarray(saliency, dtype=np.float32))[None, None]
    values = torch.nn.functional.interpolate(values, size=image.size[::-1], mode="bilinear", align_corners=False)[0, 0]
    peak = float(values.max())
    values = (values / peak if peak > 0 else values).clamp(0, 1).numpy()
    heat = Image.fromarray((colormaps["jet"](values)[..., :3] * 255).astype(np.uint8), mode="RGB")
    return Image.blend(image.convert("RGB"), heat, alpha)


def _figure_image(figure) -> Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def lstm_heatmaps(explanation, index: int) -> Image.Image:
    """Layer ``index``'s input, forget and output gates and cell state, steps x its most active units."""
    from matplotlib.figure import Figure

    layer = explanation.layers[index]
    units = layer.top_units(TOP_UNITS)
    steps = [f"-> {w.word}" for w in explanation.words] + ["-> <end>"]
    figure = Figure(figsize=(16, 1.2 + 0.28 * len(steps)), layout="constrained")
    panels = figure.subplots(1, 4)
    limit = float(layer.c[:, units].abs().max()) or 1.0
    for axes, name in zip(panels, ("input", "forget", "output", "c")):
        values = getattr(layer, name)[:, units].numpy()
        signed = name == "c"
        shown = axes.imshow(values, aspect="auto", cmap="RdBu_r" if signed else "viridis",
                            vmin=-limit if signed else 0.0, vmax=limit if signed else 1.0)
        axes.set_title("cell state c" if signed else f"{name} gate")
        axes.set_xticks(range(len(units)), [str(u) for u in units.tolist()], rotation=90, fontsize=6)
        axes.set_yticks(range(len(steps)), steps if name == "input" else [""] * len(steps), fontsize=8)
        figure.colorbar(shown, ax=axes, shrink=0.8)
    figure.suptitle(f"LSTM layer {index}: steps (the word each predicts) x its {len(units)} most active units")
    return _figure_image(figure)


def c0_survival(explanation) -> Image.Image:
    """Per layer and step: the mean forget-gate product and c0's share of the cell state."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.2), layout="constrained")
    axes = figure.subplots()
    steps = [w.word for w in explanation.words] + ["<end>"]
    for i, layer in enumerate(explanation.layers):
        axes.plot(layer.forget_product.mean(1).numpy(), marker="o", label=f"layer {i}: mean forget-gate product")
        axes.plot(layer.c0_share.numpy(), marker="s", linestyle="--", label=f"layer {i}: ||prod f * c0|| / ||c||")
    axes.set_xticks(range(len(steps)), steps, rotation=45, fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("step (the word it predicts)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.suptitle("How much of the image's c0 the cell carries straight through")
    return _figure_image(figure)


def pictures(explanation) -> dict[str, Image.Image]:
    """Every picture of the page by file name: the image, one overlay per word and method, the
    LSTM's heat maps per layer and the c0 plot."""
    image = to_pil(explanation.image)
    found = {"image.png": image}
    for method, maps in explanation.maps.items():
        for word, saliency in zip(explanation.words, maps):
            found[f"word{word.index:02d}_{method}.png"] = overlay(image, saliency)
    for i in range(len(explanation.layers)):
        found[f"lstm_layer{i}.png"] = lstm_heatmaps(explanation, i)
    if explanation.layers:
        found["c0.png"] = c0_survival(explanation)
    return found


def _word_rows(explanation) -> list[list[str]]:
    rows = []
    for w in explanation.words:
        alternatives = ", ".join(f"{esc(a)} {p:.3f}" for a, p in w.alternatives)
        forced = ""
        if w.forced:
            forced = f"{esc(w.forced['source'])}: {esc(w.forced['words'])}"
            if "probability" in w.forced:
                classes = ", ".join(f"{esc(c['label'])} {c['probability']:.3f}" for c in w.forced["classes"])
                forced += f" (p = {w.forced['probability']:.3f}: {classes})"
        beam = "<br>".join(f"{'<b>' if chosen else ''}{esc(text)} ({score:.2f}){'</b>' if chosen else ''}"
                           for text, score, chosen in w.beam)
        word = esc(w.word) + (f" <span class=note>(read as {esc(w.read_as)})</span>" if w.read_as != w.word else "")
        rows.append([word, f"{w.probability:.3f}", alternatives, forced, beam])
    return rows


def explanation_body(explanation, found: dict[str, Image.Image]) -> str:
    if explanation.error:
        return f'<p class="error">{esc(explanation.error)}</p>'
    settings = explanation.settings.to_dict()
    parts = [
        f"<p>Caption: <b>{esc(explanation.caption)}</b> (log-probability {explanation.log_prob:.3f}; "
        f"p(&lt;end&gt;) after it {explanation.end_probability:.3f})</p>",
        f'<p class="note">{esc(explanation.source)}; decoding: '
        f"{esc(', '.join(f'{k}={v}' for k, v in settings.items()))}</p>",
        "<h2>Words</h2>",
        "<p class=note>Probability: of the word after the caption's words before it. Alternatives: the most probable "
        "words at that step. Beam: the hypotheses alive after that step, with their log-probabilities (bold: the "
        "caption's own prefix); greedy decoding and sampling have no beam.</p>",
        table(["word", "p", "alternatives", "forced by", "beam after this step"], _word_rows(explanation),
              numeric=[1], raw=True),
        "<h2>Saliency</h2>", f"<p class=note>{esc(MEANING)}</p>",
    ]
    if "gradcam" in explanation.maps:
        parts.append(f"<p class=note>Grad-CAM on {esc(explanation.feature_layer)}.</p>")
    settings = explanation.saliency.to_dict() if explanation.saliency else {}
    if "smoothgrad" in explanation.maps:
        parts.append(f"<p class=note>SmoothGrad: {settings['samples']} noisy copies per word, noise standard "
                     f"deviation {settings['noise']} (pixels in [0, 1]), seed {settings['seed']}.</p>")
    if "integrated_gradients" in explanation.maps:
        parts.append(f"<p class=note>Integrated Gradients: {settings['steps']} steps from a black image.</p>")
    for w in explanation.words:
        cells = [figure(found["image.png"], "the image as the model sees it", width=180)]
        cells += [figure(found[f"word{w.index:02d}_{m}.png"], f"{TITLES[m]}: {w.word}", width=180)
                  for m in explanation.maps]
        parts.append(f"<div><h3>{w.index + 1}. {esc(w.word)} (p = {w.probability:.3f})</h3>{''.join(cells)}</div>")
    if explanation.layers:
        parts.append("<h2>Inside the LSTM</h2><p class=note>Gates after their nonlinearity, per step (each step reads "
                     "the word before and predicts the one named) for the most active units (largest mean |h|). The "
                     "image enters only as the initial state (h0, c0); along the cell's own path c0 reaches step t "
                     "times the product of the forget gates so far.</p>")
        parts += [figure(found[f"lstm_layer{i}.png"], f"layer {i}", width=1100) for i in range(len(explanation.layers))]
        parts.append(figure(found["c0.png"], "c0 carried through the cell"))
    return "\n".join(parts)


def _title(explanation) -> str:
    return f"Why \"{explanation.caption}\"" if explanation.caption is not None else f"{explanation.source}: error"


def explanation_page(explanation) -> str:
    return document(_title(explanation), explanation_body(explanation, pictures(explanation)))


def write_explanation(explanation, out_dir: str | os.PathLike) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found = pictures(explanation) if not explanation.error else {}
    paths = {}
    for name, picture in found.items():
        save_png(picture, out / name)
        paths[name] = str(out / name)
    files = {}
    for method in PIXEL_METHODS:
        if method in explanation.maps:
            name = f"{method}.npy"
            atomic_write(out / name, lambda handle, m=method: np.save(handle, explanation.maps[m]), binary=True)
            files[method], paths[name] = name, str(out / name)
    write_json_atomic(out / "explanation.json", explanation.to_dict(files), indent=1)
    paths["json"] = str(out / "explanation.json")
    write_page(out / "page.html", _title(explanation), explanation_body(explanation, found))
    paths["page"] = str(out / "page.html")
    return paths
