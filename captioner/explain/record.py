"""The JSON record of an :class:`captioner.explain.Explanation`."""

from __future__ import annotations

from .saliency import PIXEL_METHODS

TOP_UNITS = 24  # units per layer in the LSTM's heat maps and record


def _rounded(values, digits: int = 4) -> list:
    return [_rounded(v, digits) if isinstance(v, list) else round(float(v), digits) for v in values]


def explanation_record(explanation, files: dict[str, str]) -> dict:
    """The caption's record (as ``caption --jsonl``), the decoding settings, each word's record
    with its Grad-CAM map (feature-grid cells, row by row), what each saliency method was and
    where its maps are, and per LSTM layer the top units' gates and how much of c0 survives."""
    if explanation.error:
        return {"path": explanation.source, "error": explanation.error}
    record = explanation.result.to_dict()
    record["settings"] = explanation.settings.to_dict()
    record["end_probability"] = round(explanation.end_probability, 4)
    words = [w.to_dict() for w in explanation.words]
    if "gradcam" in explanation.maps:
        for word, grid in zip(words, explanation.maps["gradcam"]):
            word["gradcam"] = _rounded(grid.tolist(), 5)
    record["words"] = words
    saliency = {}
    if "gradcam" in explanation.maps:
        saliency["gradcam"] = {"layer": explanation.feature_layer, "target": "log-probability of the word",
                               "relu": True, "shape": list(explanation.maps["gradcam"].shape[1:]),
                               "method": "captum.attr.LayerGradCam"}
    settings = explanation.saliency.to_dict() if explanation.saliency else {}
    for method in PIXEL_METHODS:
        if method in explanation.maps:
            saliency[method] = {
                "target": "log-probability of the word", "shape": list(explanation.maps[method].shape[1:]),
                **({"method": "captum.attr.NoiseTunnel(Saliency), smoothgrad, |gradient|, max over channels",
                    "samples": settings["samples"], "noise": settings["noise"], "seed": settings["seed"]}
                   if method == "smoothgrad" else
                   {"method": "captum.attr.IntegratedGradients from a black image, |attribution| summed over channels",
                    "steps": settings["steps"]}),
                **({"file": files[method]} if method in files else {}),
            }
    record["saliency"] = saliency
    record["lstm"] = [_layer_record(i, layer) for i, layer in enumerate(explanation.layers)]
    return record


def _layer_record(index: int, layer) -> dict:
    units = layer.top_units(TOP_UNITS)
    return {
        "layer": index,
        "units": units.tolist(),
        **{gate: _rounded(getattr(layer, gate)[:, units].tolist(), 3) for gate in ("input", "forget", "output", "c")},
        "forget_product_mean": _rounded(layer.forget_product.mean(1).tolist()),
        "c0_share": _rounded(layer.c0_share.tolist()),
    }
