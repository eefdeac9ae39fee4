"""Captioning with ONNX Runtime over an export (:mod:`captioner.onnx.layout`).

:class:`OnnxCaptioner` is a :class:`captioner.Captioner` whose encoder, classifier and decoder
steps run in ONNX Runtime sessions: decoding, guidance, constraints and the lexicon of added
words are the torch runtime's own code, driving an :class:`OnnxStepper` instead of the torch
:class:`captioner.models.stepping.LSTMStepper`. Tensors cross to numpy at the sessions'
boundary (on the CPU without copying).

Where the networks run: the CUDA execution provider when onnxruntime has it (the
``onnxruntime-gpu`` build) and ``device`` is "cuda" or not given, else the CPU provider. The
searches' own bookkeeping stays on the CPU either way. The CPU provider uses as many threads
as torch does (``torch.get_num_threads()``, which ``OMP_NUM_THREADS`` sets), so the two
runtimes compare on equal terms.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
import torch

from ..api import Captioner
from ..checkpoint import CheckpointError
from ..data.vocab import Vocabulary
from ..decoding import DecodingSettings
from ..errors import ArgumentError, UserError
from ..models.decoder import LSTMDecoder, LSTMState
from ..models.encoder import EncoderSpec
from .layout import GRAPHS, read_export

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--runtime onnx needs onnxruntime: pip install 'captioner[onnx]'") from None
    return onnxruntime


def providers(device: str | torch.device | None = None) -> list[str]:
    """The execution providers for ``device`` ("cpu", "cuda", or None: CUDA when available)."""
    kind = None if device is None else torch.device(device).type
    if kind not in (None, "cpu", "cuda"):
        raise ArgumentError(f"--runtime onnx runs on cpu or cuda, not {device}")
    has_cuda = CUDA_PROVIDER in _onnxruntime().get_available_providers()
    if kind == "cuda" and not has_cuda:
        raise ArgumentError("--device cuda: this onnxruntime has no CUDA execution provider "
                            "(install onnxruntime-gpu), or use --device cpu")
    return [CUDA_PROVIDER, CPU_PROVIDER] if has_cuda and kind != "cpu" else [CPU_PROVIDER]


class Graph:
    """One ONNX Runtime session: called with torch tensors, returns torch tensors (CPU)."""

    def __init__(self, path: Path, provider_list: list[str]):
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=provider_list)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(path, f"ONNX Runtime cannot load it ({first}); export the checkpoint again") \
                from None
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(out) for out in self.session.run(None, feed)]


class OnnxClassifier:
    """The encoder's ImageNet head as guidance and proxies use it: called on features it gives
    class logits; ``weight`` is its (classes, D) matrix, read from the graph."""

    def __init__(self, path: Path, provider_list: list[str]):
        self.graph = Graph(path, provider_list)
        self.path = path

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return self.graph(features)[0]

    @functools.cached_property
    def weight(self) -> torch.Tensor:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(self.path))
        weights = {init.name: init for init in model.graph.initializer}
        gemm = next((node for node in model.graph.node if node.op_type == "Gemm"), None)
        if gemm is None or gemm.input[1] not in weights:
            raise CheckpointError(self.path, "the classifier graph holds no Gemm weight; export the checkpoint again")
        matrix = torch.from_numpy(numpy_helper.to_array(weights[gemm.input[1]]).copy())
        transposed = any(a.name == "transB" and a.i == 1 for a in gemm.attribute)
        return matrix if transposed else matrix.t().contiguous()


class OnnxEncoder:
    """What the captioner asks of its encoder: ``spec``, ``preprocessing``, ``categories``,
    ``head`` (:class:`OnnxClassifier`, or None) and features of pixels in [0, 1]."""

    def __init__(self, spec: EncoderSpec, categories: list[str] | None, graph: Graph,
                 head: OnnxClassifier | None):
        self.spec, self.categories, self.graph, self.head = spec, categories, graph, head

    @property
    def preprocessing(self):
        return self.spec.preprocessing

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.graph(pixels.float())[0]


class OnnxStepper:
    """The :class:`captioner.decoding.search.Stepper` of the exported decoder for a batch of features."""

    def __init__(self, init: Graph, step: Graph, features: torch.Tensor):
        self.init, self.step_graph, self.features = init, step, features
        self.rows, self.device = features.shape[0], torch.device("cpu")

    @functools.cached_property
    def state(self) -> LSTMState:
        h, c = self.init(self.features)
        return h, c

    def step(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        log_probs, h, c = self.step_graph(tokens, *state)
        return log_probs, (h, c)

    reorder = staticmethod(LSTMDecoder.reorder_state)


class OnnxCaptioner(Captioner):
    """A :class:`captioner.Captioner` over an ONNX export folder (see the module's docstring).
    Scoring given captions (:meth:`score`) needs the torch runtime."""

    def __init__(self, folder: str | os.PathLike, device: str | torch.device | None = None):
        # Captioner.__init__ takes a torch model; this sets the same attributes from the export
        folder = Path(folder)
        settings, vocab = read_export(folder)
        try:
            spec = EncoderSpec.from_dict(settings["encoder"])
            self.vocab = Vocabulary.from_dict(vocab)
            self.decoding = DecodingSettings.from_dict(settings.get("decoding"))
            graphs = settings["graphs"]
            words = settings["decoder"]["vocab_size"]
            if words != len(self.vocab) or not set(GRAPHS) - {"classifier"} <= set(graphs):
                raise ValueError(f"a decoder of {words} words, a vocabulary of {len(self.vocab)}, graphs {sorted(graphs)}")
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(folder / "settings.json", f"damaged ONNX export settings: {error}") from None
        self.folder, self.metadata = folder, settings.get("training") or {}
        self.device = torch.device("cpu")  # where the searches keep their tensors
        self.providers = providers(device)
        head = OnnxClassifier(folder / graphs["classifier"], self.providers) if "classifier" in graphs else None
        self._encoder = OnnxEncoder(spec, settings.get("categories"), Graph(folder / graphs["encoder"],
                                                                            self.providers), head)
        self._init = Graph(folder / graphs["decoder_init"], self.providers)
        self._step = Graph(folder / graphs["decoder_step"], self.providers)
        self._guide, self._proxies, self._shared = None, {}, threading.RLock()

    @classmethod
    def from_export(cls, path: str | os.PathLike | None, device: str | torch.device | None = None) -> "OnnxCaptioner":
        if path is None:
            raise ArgumentError("--runtime onnx needs --checkpoint DIR: a folder written by "
                                "`captioner checkpoint export CKPT --onnx DIR`")
        return cls(path, device)

    @property
    def encoder(self) -> OnnxEncoder:
        return self._encoder

    def stepper(self, features: torch.Tensor) -> OnnxStepper:
        return OnnxStepper(self._init, self._step, features.float())

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._encoder(pixels)

    def score(self, images, captions, batch_size: int = 16) -> list[float]:
        raise ArgumentError("scoring captions needs the torch runtime (a checkpoint file), not an ONNX export")
