"""Exporting a checkpoint to ONNX and captioning with ONNX Runtime.

``captioner checkpoint export CKPT --onnx DIR`` writes the networks as ONNX graphs
(:mod:`captioner.onnx.export`): the encoder (pixels in [0, 1] -> features, its normalisation
inside), its ImageNet classifier (features -> class logits, for guidance and word proxies),
the decoder's initial state (features -> h0, c0) and one decoder step (word, h, c ->
log-probabilities of the next word, h, c), each with a dynamic batch, plus the vocabulary and
the settings as JSON (:mod:`captioner.onnx.layout`). :class:`captioner.onnx.runtime.OnnxCaptioner`
runs them with ONNX Runtime behind the same :class:`captioner.Captioner` API, so the searches,
guidance and constraints are the very code the torch runtime runs: only the stepper differs.
"""
