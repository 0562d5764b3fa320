"""The method contract: what every registered method (DG-SCT and each baseline) implements.

A method is an ``nn.Module`` built from the frozen encoders, a ``TaskSpec`` and its own config
dataclass. The one training loop and the one evaluator in ``avprompt.engine`` call only this API.
Each method class declares ``kind`` (what it does with the shots, ``KINDS``) and ``runs_on``
(``RUNS_ON``); ``register_method`` checks both. Results record ``effective_config()`` (what ran,
after the towers forced any change) and ``reference_changes()`` (each such change and why).

Batch keys (all tensors on the method's device):
    frames  (B, T, 3, H, W) float: CLIP-normalised frames, one per one-second segment.
    audio   (B, T, S) float: mono waveform per segment at the audio encoder's sample rate.
    feat_v  (B, T, D_v) float: optional cached frozen image embeddings (``Encoders.encode``);
    feat_a  (B, T, D_a) float: optional cached frozen audio embeddings. Methods with
            ``runs_on = "features"`` use them when present and compute them from frames/audio
            otherwise (same numbers).
    segment_labels (B, T) long: class index per segment, background = ``task.background_index``.
    label   (B,) long: primary video class (video-level tasks).
    video_labels (B, K) float: multi-hot video labels (video-level tasks).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.config import TrainingConfig
from avprompt.task import TaskSpec

#: What a method does with the few shots (one declared ``Method.kind``):
#:   zero-shot       nothing is fitted or trained; needs no shots.
#:   fit             ``fit(train, val)`` on cached features is the whole learning step (closed form,
#:                   a cache, or an inner solver such as the linear probe's lbfgs); no engine epochs.
#:   fit-then-train  ``fit`` first (e.g. build a cache), then the engine's gradient-descent loop.
#:   train           the engine's gradient-descent loop only.
KINDS = ("zero-shot", "fit", "fit-then-train", "train")
#: Where it runs: "features" = only reads pooled frozen embeddings, so the engine encodes every clip
#: once and trains/evaluates from the feature cache; "network" = runs the encoders every step.
RUNS_ON = ("features", "network")
_LEGACY_FLAGS = ("cacheable", "training_free", "needs_fit")


class _Derived:
    """A read-only attribute computed from the class's ``kind`` / ``runs_on``, on the class and on
    instances alike (``cls.trains`` and ``method.trains``), so the two cannot disagree."""

    def __init__(self, fn):
        self.fn, self.__doc__ = fn, fn.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return self.fn(owner if owner is not None else type(obj))

    def __set__(self, obj, value):
        raise AttributeError(f"{type(obj).__name__}.{self.name} is derived from kind/runs_on; "
                             "declare kind = ... / runs_on = ... on the class instead")


def kind_from_flags(training_free: bool, needs_fit: bool) -> str:
    """The ``kind`` that the old (training_free, needs_fit) flag pair meant."""
    if training_free:
        return "fit" if needs_fit else "zero-shot"
    return "fit-then-train" if needs_fit else "train"


def check_declaration(cls) -> None:
    """Raise ValueError naming ``cls`` when its kind / runs_on are not legal values."""
    where = f"method class {cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"{where} is not a subclass of avprompt.method.Method; derive from it")
    if cls.kind not in KINDS:
        raise ValueError(f"{where}: kind={cls.kind!r} is not one of {'|'.join(KINDS)}; set the class "
                         "attribute kind to one of them")
    if cls.runs_on not in RUNS_ON:
        raise ValueError(f"{where}: runs_on={cls.runs_on!r} is not one of {'|'.join(RUNS_ON)}; set the "
                         "class attribute runs_on to one of them")
    if cls.fits and cls.fit is Method.fit:
        raise ValueError(f"{where}: kind={cls.kind!r} but the class does not override fit(); "
                         "implement fit() or declare kind='train'/'zero-shot'")


@dataclass
class MethodConfig(TrainingConfig):
    """Fields every method config has (subclasses add their own and override defaults).

    The optimisation fields (``TrainingConfig``) are read by the shared training loop, so each
    method carries its reference hyper-parameters next to its code.
    """

    modality: str = "v"  # "v" (CLIP branch), "a" (CLAP branch) or "av" (both, late fusion)
    # Multipliers of ``lr`` tried on validation (e.g. (1, 10, 100)); () = the reference lr only.
    # For reference learning rates tuned on CLIP's logit scale (100) run on towers with another
    # scale; the chosen one is recorded as a change from the reference value.
    lr_search: tuple[float, ...] = ()
    # How the audio tower sees a clip's segments (methods that read it): "segment" = one pass per
    # 1 s segment (the reference); "clip" = one pass over the clip, each segment pooled from its
    # own time span (``Encoders.encode``). Needs a tower whose input window covers the clip.
    audio_pass: str = "segment"


class Method(nn.Module):
    """Base class. Subclasses set the class attributes and implement ``segment_logits``."""

    key: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = MethodConfig
    supported_modalities: ClassVar[tuple[str, ...]] = ("v", "a", "av")
    #: One of ``KINDS``: what the method does with the shots (the engine reads only this).
    kind: ClassVar[str] = "train"
    #: One of ``RUNS_ON``: "features" (frozen-feature cache) or "network" (encoders every step).
    runs_on: ClassVar[str] = "network"
    #: Rough cost of one cell on the embedded towers in one single-threaded worker: (seconds per
    #: cell, seconds per training clip x epoch x learning-rate candidate), fitted on a sweep by
    #: ``benchmarks/sweep_profile.py --fit``. Only the printed time estimate and the longest-first
    #: order of cells read it; None: a default by ``runs_on``.
    cost_seconds: ClassVar[tuple[float, float] | None] = None
    #: Audio passes the method implements (``encoders.AUDIO_PASSES``); empty: both for
    #: runs_on="features" (the cache encodes either way), "segment" only for "network".
    audio_passes: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # Plug-in methods written before ``kind`` existed set the old flags as plain class
        # attributes, which would shadow the derived ones: translate them once, here.
        legacy = {f: cls.__dict__[f] for f in _LEGACY_FLAGS if isinstance(cls.__dict__.get(f), bool)}
        if not legacy:
            return
        if "kind" in cls.__dict__ or "runs_on" in cls.__dict__:
            raise TypeError(f"method class {cls.__module__}.{cls.__qualname__} sets both kind/runs_on "
                            f"and the old flags {sorted(legacy)}; keep only kind and runs_on")
        flags = {f: legacy.get(f, getattr(super(cls, cls), f)) for f in _LEGACY_FLAGS}
        for f in legacy:
            delattr(cls, f)
        cls.runs_on = "features" if flags["cacheable"] else "network"
        cls.kind = kind_from_flags(flags["training_free"], flags["needs_fit"])
        warnings.warn(f"method class {cls.__qualname__}: {', '.join(f'{f}={v}' for f, v in legacy.items())} "
                      f"are deprecated; declare kind = {cls.kind!r} and runs_on = {cls.runs_on!r}",
                      DeprecationWarning, stacklevel=2)

    @classmethod
    def implemented_audio_passes(cls) -> tuple[str, ...]:
        """The ``audio_pass`` values this method runs (see ``audio_passes``)."""
        from avprompt.encoders import AUDIO_PASSES
        return cls.audio_passes or (tuple(AUDIO_PASSES) if cls.runs_on == "features" else ("segment",))

    # ----- derived, read-only views of kind / runs_on -----------------------------------------
    @_Derived
    def is_zero_shot(cls) -> bool:
        """Nothing is fitted or trained: the method needs no shots (one shots=0 cell)."""
        return cls.kind == "zero-shot"

    @_Derived
    def fits(cls) -> bool:
        """The engine calls ``fit(train_features, val_features)`` before any training."""
        return cls.kind in ("fit", "fit-then-train")

    @_Derived
    def trains(cls) -> bool:
        """The engine runs its gradient-descent loop over ``trainable_parameters()``."""
        return cls.kind in ("fit-then-train", "train")

    @_Derived
    def cacheable(cls) -> bool:
        """Old name: ``runs_on == "features"``."""
        return cls.runs_on == "features"

    @_Derived
    def training_free(cls) -> bool:
        """Old name: no engine training loop (``kind`` is zero-shot or fit)."""
        return cls.kind in ("zero-shot", "fit")

    @_Derived
    def needs_fit(cls) -> bool:
        """Old name of ``fits``."""
        return cls.kind in ("fit", "fit-then-train")

    def __init__(self, encoders, task: TaskSpec, config: MethodConfig):
        super().__init__()
        if config.modality not in self.supported_modalities:
            raise ValueError(
                f"method {self.key!r} supports modality {'|'.join(self.supported_modalities)}, "
                f"got {config.modality!r}: set modality= to one of them")
        from avprompt.encoders import AUDIO_PASSES
        if getattr(config, "audio_pass", "segment") not in AUDIO_PASSES:
            raise ValueError(f"method {self.key!r}: audio_pass={config.audio_pass!r}; use {' or '.join(AUDIO_PASSES)}")
        if "a" in config.modality and getattr(config, "audio_pass", "segment") not in self.implemented_audio_passes():
            raise ValueError(f"method {self.key!r}: audio_pass={config.audio_pass} is not implemented for this "
                             f"in-network method (it implements {'|'.join(self.implemented_audio_passes())}); "
                             "use audio_pass=segment")
        self.encoders = encoders  # frozen; registered as a submodule so .to(device) moves it
        self.task = task
        self.config = config
        self._changes: dict[tuple[str, str | None], dict] = {}

    @classmethod
    def default_config(cls, **overrides) -> MethodConfig:
        """The method's config with its defaults; modality defaults to its first supported one."""
        import dataclasses

        from avprompt.config import apply_overrides
        cfg = cls.config_class()
        if cfg.modality not in cls.supported_modalities:
            cfg = dataclasses.replace(cfg, modality=cls.supported_modalities[0])
        return apply_overrides(cfg, overrides, where=f"method {cls.key}") if overrides else cfg

    # ----- what subclasses implement -------------------------------------------------------
    def segment_logits(self, batch: dict) -> torch.Tensor:
        """Return per-segment class logits ``(B, T, task.num_outputs)``."""
        raise NotImplementedError

    # ----- shared behaviour ------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("v", "a") if m in self.config.modality)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits: ``(B, T, K)`` for segment tasks, ``(B, K)`` (mean over T) for video tasks."""
        seg = self.segment_logits(batch)
        return seg if self.task.level == "segment" else seg.mean(dim=1)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Cross-entropy on segment labels (segment tasks) or the primary label (video tasks)."""
        if self.task.level == "segment":
            return F.cross_entropy(logits.flatten(0, 1), batch["segment_labels"].flatten())
        return F.cross_entropy(logits, batch["label"])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict]:
        """Optimiser groups for the training loop: ``{"params", "lr_scale"}`` (the schedule's lr
        times ``lr_scale``). Default: one group of every trainable parameter at scale 1."""
        return [{"params": self.trainable_parameters(), "lr_scale": 1.0}]

    #: config fields whose pre-training value a zero-shot transfer keeps unless the user sets them
    #: (values a method otherwise resolves from the target task, e.g. DG-SCT's gamma by task level)
    carried_at_transfer: tuple[str, ...] = ()

    def start_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (0-based); for losses whose weights
        depend on the epoch (DG-SCT's released code). The default does nothing."""

    def features(self, batch: dict, modality: str) -> torch.Tensor:
        """Frozen pooled embeddings ``(B, T, D)`` of one modality, from the cache when present."""
        key = "feat_" + modality
        if key in batch:
            return batch[key]
        return self.encoders.encode(batch, modality)

    def fit(self, train_features: dict, val_features: dict, score=None) -> dict:
        """The fitting step of ``kind`` "fit" / "fit-then-train" methods, on cached features.

        ``*_features`` hold ``feat_v``/``feat_a`` ``(N, T, D)`` plus the label keys (the engine's
        ``_feature_set``: one row per clip, the validation rows in the order ``score`` expects).
        Returns what was selected (recorded in the result). Called by the engine only when ``fits``.

        ``score``: ``score(logits) -> float``, higher is better: the task's primary metric on the
        validation clips (``compute_metrics(task, protocol, logits, val_records)["primary"]``, the
        number the training loop selects epochs on), supplied by the engine when there are
        validation clips. ``logits`` is this method's output for the whole validation set, shaped
        as ``forward`` returns it for a batch of ``val_features`` -- ``(N, T, K)`` for segment tasks,
        ``(N, K)`` for video tasks -- on the CPU (a float32 NumPy array, as ``loop.predict`` gives
        the evaluator; a CPU tensor works too). A method that selects anything (a grid value, a
        regularisation strength) should select by ``score`` of its full output (for ``av`` the fused
        output the evaluator scores), say its tie rule, and return the selected score as
        ``val_primary``. ``score`` may return NaN (e.g. a metric with no positive clip): rank it worst.
        When ``score`` is None (older callers, tests) a method keeps its own rule. The engine passes
        ``score`` only to a ``fit`` that takes it, so a plug-in's ``fit(train, val)`` keeps working.
        """
        return {}

    def after_training(self, val_features: dict, score=None) -> dict:
        """Called by the engine once after the training loop of a ``fit-then-train`` method (the
        selected epoch already loaded), with the validation features and ``score`` as ``fit`` gets
        them: for hyper-parameters the method's reference chooses on the trained model
        (Tip-Adapter-F searches alpha/beta after fine-tuning). Returns what it selected (recorded
        in the result under ``extra.fitted.after_training``). The default does nothing."""
        return {}

    # ----- what actually ran ------------------------------------------------------------------
    def record_change(self, field: str, reference, used, reason: str, branch: str | None = None) -> None:
        """Note that config ``field`` ran as ``used`` instead of ``reference`` (the configured /
        reference value) because of the towers or the task. Call it where the value is adapted;
        ``branch`` ("v"/"a") when the value is per tower."""
        if used == reference:
            return
        self._changes[(field, branch)] = {"field": field, "reference": reference, "used": used,
                                          "reason": reason, "branch": branch}

    def reference_changes(self) -> list[dict]:
        """Every architecture value that differs from the configured reference value, each
        ``{"field", "reference", "used", "reason"}`` (plus ``"branches"`` for per-tower values)."""
        merged: dict[tuple, dict] = {}
        for (field, branch), ch in self._changes.items():
            key = (field, repr(ch["reference"]), repr(ch["used"]), ch["reason"])
            entry = merged.setdefault(key, {k: ch[k] for k in ("field", "reference", "used", "reason")})
            if branch is not None:
                entry.setdefault("branches", []).append(branch)
        return list(merged.values())

    def effective_config(self) -> dict:
        """The config that ran: ``asdict(config)`` with every recorded change applied (a per-branch
        value that differs between branches becomes ``{branch: value}``)."""
        out = dataclasses.asdict(self.config)
        per_field: dict[str, dict] = {}
        for (field, branch), ch in self._changes.items():
            per_field.setdefault(field, {})[branch] = ch["used"]
        for field, used in per_field.items():
            values = {repr(v) for v in used.values()}
            unchanged = [m for m in self.modalities if m not in used] if None not in used else []
            if len(values) == 1 and not unchanged:
                out[field] = next(iter(used.values()))
            else:  # branches ran with different values: record each
                out[field] = {**{m: out[field] for m in unchanged}, **used}
        return out

    def train(self, mode: bool = True):
        # The frozen encoders stay in eval mode (BatchNorm statistics, SpecAugment, dropout). They
        # are skipped rather than walked: the loop switches modes twice per epoch, and walking the
        # towers' module trees each time cost seconds per cell on cached features.
        self.training = mode
        for child in self.children():
            if child is not self.encoders:
                child.train(mode)
        if self.encoders is not None and self.encoders.training:
            self.encoders.eval()
        return self
