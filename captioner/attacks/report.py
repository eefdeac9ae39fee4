"""Robustness reports, and the files an attack leaves behind.

:func:`robustness_report` attacks every image at every eps and measures, per eps:

* classifiers: accuracy against given labels, or else agreement with the clean
  predictions; the attack success rate (prediction changed); the same for the 8-bit
  images a PNG would hold;
* captioners: BLEU-4 and CIDEr-D against the references (or, without references,
  against the clean captions) and the caption-change rate;
* the mean L-inf and L2 norms of the perturbations.

:func:`write_report` saves it as JSON, a PNG plot of the curves and a Markdown summary.
Untargeted attacks throughout, moving away from the model's own clean predictions.
Plots use matplotlib's Agg canvas directly, never pyplot's global state.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.eightbit import LEVELS, save_png
from ..data.images import ImageLoadError, load_image
from ..data.preprocess import pil_to_tensor
from ..distributed import Distributed
from ..errors import ArgumentError
from ..fileio import atomic_write, write_json_atomic, write_text_atomic
from ..metrics import score_captions
from .base import AttackResult
from .methods import make_attack


def format_eps(eps: float) -> str:
    """In 8-bit levels where that is exact to a quarter level (``2/255``, ``0.5/255``), else the plain number."""
    levels = eps * LEVELS
    if levels == 0:
        return "0"
    if abs(levels * 4 - round(levels * 4)) < 1e-6:
        return f"{round(levels * 4) / 4:g}/255"
    return f"{eps:.4g}"


def _load(paths: Sequence[str], resize_to: int | None):
    for index, path in enumerate(paths):
        try:
            yield index, pil_to_tensor(load_image(path, resize_to=resize_to)), None
        except ImageLoadError as error:
            yield index, None, str(error)


def _groups(loaded):
    """Same-sized images batched together (attacks keep each image's own size)."""
    by_shape: dict[tuple, list] = {}
    for index, pixels in loaded:
        by_shape.setdefault(tuple(pixels.shape), []).append((index, pixels))
    for members in by_shape.values():
        yield [i for i, _ in members], torch.stack([p for _, p in members])


def _attack_all(probe, attacks: dict, paths: Sequence[str], eps_values: list[float], batch_size: int, show: bool,
                info: Distributed = Distributed(), generator: torch.Generator | None = None, seed: int = 0):
    """Clean predictions and, per eps, (prediction, fooled, saved fooled, L-inf, L2) of every readable image.
    Under torchrun each process attacks every N-th batch, and every process gets all the results. PGD's
    random starts come from ``generator``, seeded per batch (``seed`` + the batch's first index), so a
    batch is attacked the same way whichever process takes it."""
    clean: dict[int, torch.Tensor] = {}
    found: dict[float, dict[int, tuple]] = {eps: {} for eps in eps_values}
    skipped = []
    resize_to = getattr(probe.victim, "resize_size", None)  # the victim's preprocessing, when it has one
    progress = tqdm(total=len(paths), unit="img", disable=not show or not info.is_main, file=sys.stderr)
    for start in range(info.rank * batch_size, len(paths), info.world * batch_size):
        if generator is not None:
            generator.manual_seed(seed + start)
        loaded = []
        for index, pixels, error in _load(paths[start:start + batch_size], resize_to):
            if error:
                skipped.append((start + index, {"path": paths[start + index], "error": error}))
            else:
                loaded.append((start + index, pixels))
        for indices, pixels in _groups(loaded):
            predictions = probe.predict(pixels)
            clean.update(zip(indices, predictions))
            for eps in eps_values:
                if eps == 0:
                    rows = [(p, False, False, 0.0, 0.0) for p in predictions]
                else:
                    result = attacks[eps].run(pixels)
                    rows = zip(result.predictions, result.fooled.tolist(), result.saved_fooled.tolist(),
                               result.linf(saved=False).tolist(), result.l2(saved=False).tolist())
                found[eps].update(zip(indices, rows))
        progress.update(len(paths[start:start + batch_size]) * info.world)
    progress.close()
    if info.enabled:
        shares = info.all_gather(_on_cpu((clean, found, skipped)))
        clean = {i: p for share in shares for i, p in share[0].items()}
        found = {eps: {i: row for share in shares for i, row in share[1][eps].items()} for eps in eps_values}
        skipped = [entry for share in shares for entry in share[2]]
    return clean, found, [entry for _, entry in sorted(skipped, key=lambda pair: pair[0])]


def _on_cpu(value):
    """``value`` with every tensor in it moved to the CPU (to send it to another process)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def robustness_report(victim, paths: Sequence[str], eps_values: Sequence[float], method: str = "fgsm",
                      steps: int = 10, alpha: float | None = None, labels: Sequence[int] | None = None,
                      references: Sequence[Sequence[str]] | None = None, batch_size: int = 8, seed: int = 0,
                      name: str = "", show: bool = False, info: Distributed = Distributed()) -> dict | None:
    """Attack each image of ``paths`` at each eps; see the module docstring for the measures.

    ``labels`` (classifiers) and ``references`` (captioners) are per path; without them
    the clean predictions serve as the truth. Unreadable images are skipped and listed.
    Under torchrun (``info``) the processes share the batches; process 0 returns the report,
    the others None.
    """
    if not eps_values:
        raise ArgumentError("give at least one eps")
    if labels is not None and len(labels) != len(paths):
        raise ArgumentError(f"{len(labels)} labels for {len(paths)} images")
    captioner = victim.kind == "captioner"
    eps_values = sorted(set(float(e) for e in eps_values))
    probe = make_attack(method, victim, max(eps_values), steps, alpha)  # for clean predictions and the device
    generator = torch.Generator(device=probe.device).manual_seed(seed)
    options = {"generator": generator} if method == "pgd" else {}
    attacks = {eps: make_attack(method, victim, eps, steps, alpha, **options) for eps in eps_values if eps > 0}
    clean, found, skipped = _attack_all(probe, attacks, paths, eps_values, batch_size, show, info,
                                        generator if method == "pgd" else None, seed)
    if not info.is_main:
        return None
    order = sorted(clean)
    if not order:
        raise ArgumentError("none of the images could be read")
    clean_text = victim.describe([clean[i] for i in order])
    report = {
        "kind": victim.kind, "model": name, "method": method, "steps": None if method == "fgsm" else steps,
        "alpha": alpha if alpha is not None else ("2.5*eps/steps" if method != "fgsm" else None),
        "images": len(order), "skipped": skipped, "notes": [], "rows": [],
        "per_image": [{"path": paths[i], "clean": clean_text[k]} for k, i in enumerate(order)],
    }
    if captioner:
        if references is None:
            report["notes"].append("no reference captions: BLEU-4 and CIDEr-D compare the adversarial captions "
                                   "with the clean ones (100 = unchanged)")
        refs = {str(i): list(references[i]) if references is not None else [clean_text[k]]
                for k, i in enumerate(order)}
    else:
        report["metric"] = "accuracy" if labels is not None else "agreement"
        if labels is None:
            report["notes"].append("no labels: agreement = share of images whose prediction is unchanged")
    for eps in eps_values:
        preds, fooled, saved_fooled, linf, l2 = zip(*(found[eps][i] for i in order))
        texts = victim.describe(preds)
        for entry, text in zip(report["per_image"], texts):
            entry[format_eps(eps)] = text
        row = {"eps": eps, "eps_text": format_eps(eps)}
        if captioner:
            scored = score_captions(dict(zip(refs, texts)), refs, metrics=("BLEU", "CIDEr-D"))
            row.update({"BLEU-4": scored.scores["BLEU-4"], "CIDEr-D": scored.scores["CIDEr-D"]})
            report["notes"].extend(n for n in scored.notes if n not in report["notes"])
            rate_name = "change_rate"
        else:
            truth = [labels[i] for i in order] if labels is not None else [int(clean[i]) for i in order]
            row[report["metric"]] = 100.0 * float(np.mean([int(p) == t for p, t in zip(preds, truth)]))
            rate_name = "success_rate"
        row.update({
            rate_name: 100.0 * float(np.mean(fooled)), f"saved_{rate_name}": 100.0 * float(np.mean(saved_fooled)),
            "linf_255": float(np.mean(linf)) * LEVELS, "l2": float(np.mean(l2)),
        })
        report["rows"].append(row)
    return report


def report_columns(report: dict) -> list[str]:
    """The per-eps measures of a report, in the order its table and page show them."""
    if report["kind"] == "captioner":
        return ["BLEU-4", "CIDEr-D", "change_rate", "saved_change_rate", "linf_255", "l2"]
    return [report["metric"], "success_rate", "saved_success_rate", "linf_255", "l2"]


def format_table(report: dict) -> str:
    """The per-eps rows as a Markdown table (rates and accuracies in %)."""
    columns = report_columns(report)
    lines = ["| eps | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in report["rows"]:
        lines.append(f"| {row['eps_text']} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    return "\n".join(lines)


def format_report_text(report: dict) -> str:
    """The report as ``captioner attack report`` prints it: the table, notes, skipped images, files."""
    lines = [format_table(report)]
    lines += [f"note: {note}" for note in report["notes"]]
    lines += [f"skipped {s['path']}: {s['error']}" for s in report["skipped"]]
    lines += [f"wrote {path}" for path in report.get("files", {}).values()]
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    method = report["method"].upper() + ("" if report["steps"] is None else f", {report['steps']} steps")
    lines = [
        f"# Robustness of {report['model'] or 'the model'}", "",
        f"{method}, untargeted, on {report['images']} images; pixels in [0, 1] "
        "(eps in 8-bit levels: 2/255 = two levels). `saved_*`: the same attack rounded to 8 bits, as in a PNG; "
        "`linf_255`: mean L-inf norm in levels; `l2`: mean L2 norm in [0, 1] units.", "",
        format_table(report), "",
    ]
    lines += [f"- {note}" for note in report["notes"]]
    lines += [f"- skipped {s['path']}: {s['error']}" for s in report["skipped"]]
    return "\n".join(lines).rstrip() + "\n"


def plot_report(report: dict, path: str | Path) -> None:
    """Two panels against eps: quality (accuracy, or BLEU-4 and CIDEr-D) and attack success."""
    from matplotlib.figure import Figure

    x = [row["eps"] * LEVELS for row in report["rows"]]
    figure = Figure(figsize=(10, 4), layout="constrained")
    quality, success = figure.subplots(1, 2)
    captioner = report["kind"] == "captioner"
    for metric in (["BLEU-4", "CIDEr-D"] if captioner else [report["metric"]]):
        quality.plot(x, [row[metric] for row in report["rows"]], marker="o", label=metric)
    quality.set_ylabel("score (x100)" if captioner else f"{report['metric']} (%)")
    rate = "change_rate" if captioner else "success_rate"
    success.plot(x, [row[rate] for row in report["rows"]], marker="o", label="float image")
    success.plot(x, [row[f"saved_{rate}"] for row in report["rows"]], marker="s", linestyle="--",
                 label="saved 8-bit PNG")
    success.set_ylabel("caption changed (%)" if captioner else "attack success (%)")
    success.set_ylim(-2, 102)
    for axes in (quality, success):
        axes.set_xlabel("eps (8-bit levels, x/255)")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(f"{report['method'].upper()} on {report['model'] or 'the model'}, {report['images']} images")
    save_figure(figure, path)


def save_figure(figure, path: str | Path) -> None:
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100), binary=True)


def write_report(report: dict, out_dir: str | Path) -> dict[str, str]:
    """``report.json``, ``report.png``, ``report.md`` and ``report.html`` (the curves, the table and
    every image's predictions, :func:`captioner.report_pages.write_report_page`) in ``out_dir``;
    returns their paths."""
    from ..report_pages import write_report_page

    out = Path(out_dir)
    paths = {"json": str(out / "report.json"), "plot": str(out / "report.png"), "markdown": str(out / "report.md"),
             "page": str(out / "report.html")}
    write_json_atomic(paths["json"], report, indent=2)
    plot_report(report, paths["plot"])
    write_text_atomic(paths["markdown"], format_markdown(report))
    write_report_page(report, paths["page"], paths["plot"])
    return paths


# -- the files of one attacked image ---------------------------------------------------------
def amplified_perturbation(result: AttackResult, index: int, eps: float) -> torch.Tensor:
    """The saved perturbation scaled for viewing: -eps -> black, 0 -> grey, +eps -> white."""
    delta = result.saved[index] - result.images[index]
    return (0.5 + delta / (2 * eps)).clamp(0, 1) if eps > 0 else torch.full_like(delta, 0.5)


def save_attack_files(result: AttackResult, index: int, eps: float, out_dir: str | Path, stem: str,
                      titles: Sequence[str], notes: Sequence[str] = ()) -> dict[str, str]:
    """The adversarial PNG, the amplified perturbation and a side-by-side figure.

    ``titles``: what to write under the original, the perturbation and the adversarial
    image (e.g. top-5 labels, or captions before and after).
    """
    from matplotlib.figure import Figure

    out = Path(out_dir)
    paths = {"adversarial": str(out / f"{stem}_adversarial.png"),
             "perturbation": str(out / f"{stem}_perturbation.png"), "figure": str(out / f"{stem}_figure.png")}
    perturbation = amplified_perturbation(result, index, eps)
    save_png(result.saved[index], paths["adversarial"])
    save_png(perturbation, paths["perturbation"])
    height, width = result.images.shape[-2:]
    figure = Figure(figsize=(13, 13 / 3 * height / width + 1.8), layout="constrained")
    panels = figure.subplots(1, 3)
    images = (result.images[index], perturbation, result.saved[index])
    for axes, image, title in zip(panels, images, titles):
        axes.imshow(image.permute(1, 2, 0).numpy())
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_xlabel(title, fontsize=9, family="monospace", loc="left")
    if notes:
        figure.suptitle("   ".join(notes), fontsize=10)
    save_figure(figure, paths["figure"])
    return paths
