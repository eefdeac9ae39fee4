"""How captions are decoded: one settings record, with its defaults written here only.

The same :class:`DecodingSettings` is the ``decode:`` section of a training config, the
default stored in a checkpoint, and what ``captioner caption``, ``evaluate`` and
``attack caption`` decode with after their command-line options are applied
(:meth:`DecodingSettings.with_options`: ``None`` means "not given", so an explicit ``0``
is never replaced by a default).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from ..errors import UserError


@dataclass(frozen=True)
class Method:
    """A decoding method and what it supports. ``constrained``: it takes word constraints (the
    user's includes and a guide's words); ``several``: it can give more than one caption per
    image; ``deterministic``: the same features always give the same captions (what scoring,
    validation and attacks need)."""

    name: str
    constrained: bool
    several: bool
    deterministic: bool


METHODS = {m.name: m for m in (
    Method("beam", constrained=True, several=True, deterministic=True),
    Method("greedy", constrained=True, several=False, deterministic=True),
    Method("sample", constrained=False, several=True, deterministic=False),
)}
GUIDES = ("none", "imagenet")
# What one request may ask for: the search's memory grows with the beam (and the captions
# sampled) times the vocabulary, its time with the words.
MAX_BEAM_SIZE = 50
MAX_CAPTIONS = 50
MAX_LENGTH = 100
#: How long a caption may be when the decoder is unsure (``DecodingSettings.unsure_below``).
SAY_LESS_WORDS = 4


def methods(**needs: bool) -> tuple[str, ...]:
    """The names of the methods with the given properties (``methods(deterministic=True)``)."""
    return tuple(name for name, method in METHODS.items()
                 if all(getattr(method, need) == value for need, value in needs.items()))


def require_method(method: str, what: str, **needs: bool) -> None:
    """Refuse ``method`` for ``what`` (e.g. ``"--include"``) unless it has the properties ``needs``."""
    allowed = methods(**needs)
    if method not in allowed:
        raise DecodingError(f"{what} needs {' or '.join(allowed)} decoding, not {method}")


class DecodingError(UserError, ValueError):
    """Impossible decoding settings; the message names the setting and the value."""


@dataclass(frozen=True)
class DecodingSettings:
    """``length_penalty``: beam search ranks finished captions by log-probability /
    (words + 1) ** length_penalty (0: plain log-probability, which favours short captions;
    1: mean per token). 0.5 is what the bundled model's validation split chose.

    ``guide``: ``"imagenet"`` turns the encoder's confident ImageNet classes into words the
    caption must contain (:mod:`captioner.guidance`), ``"none"`` leaves the caption to the
    decoder. ``guide_threshold``: the probability a class (or the classes sharing a name)
    must reach to be forced.

    ``unsure_below`` (None: off) says less when the decoder is unsure of a photo: with a guide,
    an image for which the guide forced nothing and whose best caption averages a
    log-probability per word (its ``<end>`` included) below ``unsure_below`` is captioned
    again in at most :data:`SAY_LESS_WORDS` words, naming the guide's surest concept when
    one reaches ``unsure_threshold`` (a lower bar than ``guide_threshold``; one concept only).
    """

    method: str = "beam"
    beam_size: int = 3
    num_captions: int = 1
    max_length: int = 20
    length_penalty: float = 0.5
    temperature: float = 1.0
    top_k: int | None = None
    guide: str = "none"
    guide_threshold: float = 0.5
    unsure_below: float | None = None
    unsure_threshold: float = 0.2

    def __post_init__(self):
        if self.unsure_below == -math.inf:  # "never unsure" (``--unsure-below off``) is stored as off
            object.__setattr__(self, "unsure_below", None)
        self.validate()

    def validate(self) -> "DecodingSettings":
        if self.method not in METHODS:
            raise DecodingError(f"unknown decoding method {self.method!r}; choose {', '.join(METHODS)}")
        if self.guide not in GUIDES:
            raise DecodingError(f"unknown guide {self.guide!r}; choose {' or '.join(GUIDES)}")
        for name, most in (("beam_size", MAX_BEAM_SIZE), ("num_captions", MAX_CAPTIONS), ("max_length", MAX_LENGTH)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise DecodingError(f"{name} must be at least 1 and at most {most} (a whole number), got {value!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise DecodingError(f"top_k must be at least 1, got {self.top_k!r}")
        for name in ("length_penalty", "temperature", "guide_threshold", "unsure_threshold", "unsure_below"):
            value = getattr(self, name)
            if name == "unsure_below" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DecodingError(f"{name} must be a finite number, got {value!r}")
        if self.length_penalty < 0:
            raise DecodingError(f"length_penalty must be >= 0, got {self.length_penalty}")
        if self.temperature <= 0:
            raise DecodingError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.guide_threshold <= 1.0:
            raise DecodingError(f"guide_threshold must be in [0, 1], got {self.guide_threshold}")
        if not 0.0 <= self.unsure_threshold <= 1.0:
            raise DecodingError(f"unsure_threshold must be in [0, 1], got {self.unsure_threshold}")
        if self.unsure_below is not None and self.unsure_below > 0:
            raise DecodingError(f"unsure_below is a log-probability per word, at most 0, got {self.unsure_below}")
        if self.guide != "none":
            require_method(self.method, f"guide {self.guide}", constrained=True)
        if self.num_captions != 1 and not METHODS[self.method].several:
            raise DecodingError(f"{self.method} decoding gives one caption per image (num_captions 1); use "
                                f"{' or '.join(methods(several=True))} for more")
        if self.method == "beam" and self.num_captions > self.beam_size:
            raise DecodingError(f"num_captions {self.num_captions} needs a beam size of at least "
                                f"{self.num_captions}, got beam_size {self.beam_size}")
        return self

    def with_options(self, **options) -> "DecodingSettings":
        """A copy with the given options changed; ``None`` values leave a setting as it is.

        A guide that was not asked for applies only to the methods that take constraints: the
        defaults' guide is dropped when the options choose sampling, while a guide asked for
        together with sampling is an error."""
        unknown = set(options) - {f.name for f in fields(self)}
        if unknown:
            raise DecodingError(f"unknown decoding option(s) {', '.join(sorted(unknown))}")
        given = {k: v for k, v in options.items() if v is not None}
        method = METHODS.get(given.get("method", self.method))
        if "guide" not in given and method is not None and not method.constrained:
            given["guide"] = "none"
        return replace(self, **given)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "DecodingSettings":
        """Settings from a checkpoint's stored dict (missing keys keep their defaults)."""
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise DecodingError(f"unknown decoding setting(s) {', '.join(sorted(unknown))}")
        return cls(**data)


DEFAULTS = DecodingSettings()
