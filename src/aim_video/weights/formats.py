"""Checkpoint formats: every foreign layout mapped to our names, files read safely and written.

Our names are OpenAI CLIP's (`conv1.weight`, `transformer.resblocks.{i}.attn.in_proj_weight`,
...) plus AIM's (`temporal_embedding`, `...S_Adapter.D_fc1.weight`, ...) and `head`. Each foreign
format is one `Layout`: a readable table of name swaps, with the foreign names it ignores by
design. Loading then goes through one strict check (`aim_video.weights.load`): every backbone
weight of the model must be in the file with the right shape, and every key of the file must be used
or ignored by design; anything else is a `CheckpointError` that lists the keys.

Formats (`FORMATS`):
    openai     OpenAI CLIP: the published TorchScript archive (`ViT-B-16.pt`) or a plain state
               dict, keys under `visual.` (the rest of CLIP is ignored) or without a prefix.
    open_clip  open_clip: the same names under `visual.`; training checkpoints wrap them in
               `{"state_dict": {"module.visual....": ...}}`.
    hf         Hugging Face `CLIPVisionModel` / `CLIPModel` (`.safetensors`, `.bin`, or a folder
               holding one); with the `vision_model.` prefix (Hub files, CLIPModel) or without
               it (what transformers 5 saves for a CLIPVisionModel).
    timm       timm's CLIP ViTs (`vit_base_patch16_clip_224.openai`): fused `attn.qkv`.
    aim        the released AIM checkpoints (MMAction2): `backbone.*` + `cls_head.fc_cls.*`.
    ours       `AIMViT.state_dict()`.

Safety: nothing in a file runs unless `trust=True`. `.pt`/`.pth`/`.bin` files are read with
`torch.load(weights_only=True)`; OpenAI's TorchScript archives, which that cannot read and
`torch.jit.load` would run code from, by `aim_video.script_archive` (their tensors only). A file
that needs more (released MMAction2 checkpoints keep numpy and mmcv objects in `meta`; a class
rebuilt by its own TorchScript code; a plain pickle) is refused with a `CheckpointError` naming
what it needs, unless `trust=True`: only for files from a trusted source.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import nn
from torch.serialization import MAGIC_NUMBER

from aim_video.errors import UserError
from aim_video.model.vit import ADAPTER_NAMES, AIMViT, parameter_group
from aim_video.script_archive import UnsafeArchive, pickle_imports, read_script_archive

FORMATS = ("openai", "open_clip", "hf", "timm", "aim", "ours")
# Formats that hold a whole AIM video model (adapters, temporal embedding, head), not an image one.
VIDEO_FORMATS = ("aim", "ours")
# Files inside a folder that a Hugging Face model folder holds, in order of preference.
HF_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")
MAX_LISTED = 20  # keys listed per kind in an error message


class CheckpointError(UserError):
    """A checkpoint file cannot be read, or does not fit the model; the message names the file."""


# ============================================================================ name tables
@cache
def _template_regex(template: str) -> re.Pattern[str]:
    """`{i}` -> a block index, `{p}` -> weight|bias, `{rest}` -> anything; the rest literal."""
    fields = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "rest": r"(?P<rest>.+)"}
    pattern = re.escape(template)
    for name, regex in fields.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), regex)
    return re.compile(pattern)


def _match(template: str, name: str) -> dict[str, str] | None:
    found = _template_regex(template).fullmatch(name)
    return found.groupdict() if found else None


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Swap:
    """One of our names and the foreign name(s) holding the same tensor.

    Templates may contain `{i}` (block index), `{p}` (weight or bias) and `{rest}`. Several
    foreign names mean our tensor is their concatenation along dim 0 (HF's separate q, k, v
    versus CLIP's fused `in_proj`); `to_ours`/`to_theirs` reshape where layouts differ.
    """

    ours: str
    theirs: tuple[str, ...]
    to_ours: Callable[[torch.Tensor], torch.Tensor] = _same
    to_theirs: Callable[[torch.Tensor], torch.Tensor] = _same

    def our_name(self, foreign: str) -> tuple[str, int] | None:
        """(our name, which part) when `foreign` is one of this swap's names."""
        for part, template in enumerate(self.theirs):
            fields = _match(template, foreign)
            if fields is not None:
                return self.ours.format(**fields), part
        return None

    def foreign(self, ours: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Our tensor under the foreign name(s), split when fused; None if not ours to map."""
        fields = _match(self.ours, ours)
        if fields is None:
            return None
        parts = self.to_theirs(tensor).chunk(len(self.theirs))
        return {t.format(**fields): p for t, p in zip(self.theirs, parts, strict=True)}


def swap(ours: str, *theirs: str, to_ours=_same, to_theirs=_same) -> Swap:
    """A table row: `swap(our template, their template(s), reshapes)`."""
    return Swap(ours, theirs, to_ours, to_theirs)


@dataclass(frozen=True)
class Layout:
    """A foreign format: its name swaps, and the foreign names it ignores by design."""

    swaps: tuple[Swap, ...]
    ignored: tuple[str, ...] = ()


BLOCK = "transformer.resblocks.{i}."

# OpenAI CLIP outside the visual tower (text tower, CLIP-level scalars); open_clip's extras.
CLIP_NON_VISUAL = (
    "positional_embedding", "text_projection", "logit_scale", "logit_bias",
    "token_embedding.{rest}", "transformer.{rest}", "ln_final.{rest}", "text.{rest}",
    "input_resolution", "context_length", "vocab_size",
)


def _clip_layout(prefix: str) -> Layout:
    """OpenAI / open_clip: our names are theirs (open_clip keeps OpenAI's), under `prefix`."""
    ignored = (f"{prefix}proj",)  # the image-text projection; AIM has a classifier instead
    if prefix:
        ignored += CLIP_NON_VISUAL
    return Layout((swap("{rest}", prefix + "{rest}"),), ignored)


def _hf_layout(prefix: str) -> Layout:
    """Hugging Face CLIP vision tower; separate q, k, v projections."""
    emb = f"{prefix}embeddings."
    layer = f"{prefix}encoder.layers.{{i}}."
    attn = layer + "self_attn."
    return Layout(
        (
            swap("class_embedding", emb + "class_embedding"),
            swap("conv1.weight", emb + "patch_embedding.weight"),
            swap("positional_embedding", emb + "position_embedding.weight"),
            swap("ln_pre.{p}", prefix + "pre_layrnorm.{p}"),  # sic
            swap(BLOCK + "attn.in_proj_{p}", *(attn + f"{x}_proj.{{p}}" for x in "qkv")),
            swap(BLOCK + "attn.out_proj.{p}", attn + "out_proj.{p}"),
            swap(BLOCK + "ln_1.{p}", layer + "layer_norm1.{p}"),
            swap(BLOCK + "mlp.c_fc.{p}", layer + "mlp.fc1.{p}"),
            swap(BLOCK + "mlp.c_proj.{p}", layer + "mlp.fc2.{p}"),
            swap(BLOCK + "ln_2.{p}", layer + "layer_norm2.{p}"),
            swap("ln_post.{p}", prefix + "post_layernorm.{p}"),
        ),
        ignored=(
            emb + "position_ids",  # a buffer of 0..N in older transformers
            "text_model.{rest}", "visual_projection.weight", "text_projection.weight",
            "logit_scale",
        ),
    )


def _batched(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(0)  # (N+1, D) -> (1, N+1, D)


def _unbatched(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(0, -2) if t.ndim == 3 else t  # (1, N+1, D) -> (N+1, D)


def _as_token(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, 1, -1)  # (D,) -> (1, 1, D)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten()  # (1, 1, D) -> (D,)


TIMM = Layout(
    (
        swap("class_embedding", "cls_token", to_ours=_flat, to_theirs=_as_token),
        swap("positional_embedding", "pos_embed", to_ours=_unbatched, to_theirs=_batched),
        swap("conv1.weight", "patch_embed.proj.weight"),
        swap("ln_pre.{p}", "norm_pre.{p}"),
        swap(BLOCK + "attn.in_proj_{p}", "blocks.{i}.attn.qkv.{p}"),  # fused q, k, v as CLIP
        swap(BLOCK + "attn.out_proj.{p}", "blocks.{i}.attn.proj.{p}"),
        swap(BLOCK + "ln_1.{p}", "blocks.{i}.norm1.{p}"),
        swap(BLOCK + "mlp.c_fc.{p}", "blocks.{i}.mlp.fc1.{p}"),
        swap(BLOCK + "mlp.c_proj.{p}", "blocks.{i}.mlp.fc2.{p}"),
        swap(BLOCK + "ln_2.{p}", "blocks.{i}.norm2.{p}"),
        swap("ln_post.{p}", "norm.{p}"),
    ),
    ignored=("head.{rest}",),  # CLIP's projection (or an ImageNet classifier)
)

AIM_RELEASE = Layout(
    (
        swap("head.{p}", "cls_head.fc_cls.{p}"),
        swap("{rest}", "backbone.{rest}"),
    )
)

OURS = Layout((swap("{rest}", "{rest}"),))


def layout_for(format: str, keys: list[str] | None = None) -> Layout:
    """The name table of `format`; `keys` (a file's) pick the prefix variant, None the usual one."""

    def prefixed(prefix: str) -> str:
        has = keys is None or any(k.startswith(prefix) for k in keys)
        return prefix if has else ""

    if format in ("openai", "open_clip"):
        return _clip_layout(prefixed("visual."))
    if format == "hf":
        return _hf_layout(prefixed("vision_model."))
    tables = {"timm": TIMM, "aim": AIM_RELEASE, "ours": OURS}
    if format not in tables:
        raise ValueError(f"unknown checkpoint format {format!r}; known: {', '.join(FORMATS)}")
    return tables[format]


@dataclass
class Converted:
    """A file's tensors under our names, plus the file keys ignored or not understood."""

    tensors: dict[str, torch.Tensor]
    sources: dict[str, str]  # our name -> the file key(s) it came from, for error messages
    ignored: list[str]
    unknown: list[str]


def to_ours(state: Mapping[str, torch.Tensor], layout: Layout) -> Converted:
    """Renames a foreign state dict to our names (fusing split tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    pieces: dict[str, tuple[Swap, dict[int, str]]] = {}  # fused name -> (swap, part -> key)
    for key, tensor in state.items():
        if any(_match(t, key) is not None for t in layout.ignored):
            ignored.append(key)
            continue
        for sw in layout.swaps:
            hit = sw.our_name(key)
            if hit is not None:
                break
        else:
            unknown.append(key)
            continue
        name, part = hit
        if len(sw.theirs) == 1:
            tensors[name], sources[name] = sw.to_ours(tensor), key
        else:
            pieces.setdefault(name, (sw, {}))[1][part] = key
    for name, (sw, keys) in pieces.items():
        if len(keys) == len(sw.theirs):
            parts = [keys[i] for i in range(len(keys))]
            tensors[name] = sw.to_ours(torch.cat([state[k] for k in parts]))
            sources[name] = "+".join(parts)
        else:  # an incomplete q/k/v set: report what is there as not understood
            unknown.extend(keys.values())
    return Converted(tensors, sources, ignored, unknown)


def from_ours(state: Mapping[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """Renames our state dict to a foreign layout (splitting fused tensors); copies tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        for sw in layout.swaps:
            mapped = sw.foreign(name, tensor.detach())
            if mapped is not None:
                # clone: a saved slice would otherwise drag its whole fused storage into the file
                out.update({k: v.clone() for k, v in mapped.items()})
                break
        else:
            raise ValueError(f"{name} has no counterpart in this format")
    return out


# ============================================================================ reading files
@dataclass
class RawCheckpoint:
    """A file's state dict and what its container said about its origin."""

    path: Path
    state: dict[str, torch.Tensor]
    torchscript: bool = False  # an OpenAI-style TorchScript archive
    training_wrapper: bool = False  # {"state_dict": ...} and/or `module.` prefixes


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 1 << 30


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold `code/` and `constants.pkl`; torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist())


def _first_line(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # drop terminal colour codes
    return f"{type(err).__name__}: {text.splitlines()[0] if text else '(no message)'}"


def _unpickler_reason(err: BaseException) -> str:
    """The line of torch's weights-only refusal that says what the pickle needs."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    _, _, after = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (after or text).splitlines() if line.strip()]
    reason = lines[0].split(" Please use")[0] if lines else ""
    return reason.rstrip(".") or "(torch gave no reason)"


TRUST_HINT = (
    "If the file comes from a source you trust, load it anyway with trust=True (CLI: "
    "--trust-checkpoint); loading an untrusted file that way can run arbitrary code."
)


def _is_plain_pickle(path: Path) -> bool:
    """A pickle written by `pickle.dump`, not `torch.save` (a zip, or legacy: a magic number
    pickled first). Decided from the first pickle's opcodes, without unpickling."""
    if zipfile.is_zipfile(path):
        return False
    legacy = False
    try:
        with open(path, "rb") as f:  # streamed to the first pickle's STOP: a whole pickle
            for i, (op, arg, _) in enumerate(pickletools.genops(f)):
                legacy |= i < 3 and op.name.startswith("LONG") and arg == MAGIC_NUMBER
    except Exception:  # noqa: BLE001 - not a pickle at all: torch.load reports it
        return False
    return not legacy


def _plain_pickle(path: Path, trust: bool) -> object:
    if trust:  # the user vouched for the file
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301
    with open(path, "rb") as f:
        imports = pickle_imports(f)
    if not imports:
        raise CheckpointError(f"{path}: a plain pickle without tensors, not a checkpoint")
    raise CheckpointError(
        f"{path}: a plain pickle (not written by torch.save), which only full pickle can read: "
        f"it imports {', '.join(imports)}. {TRUST_HINT} Better: save weights with "
        "torch.save(model.state_dict(), ...) or safetensors."
    )


def _torch_load(path: Path, trust: bool) -> object:
    if _is_plain_pickle(path):
        return _plain_pickle(path, trust)
    try:
        if trust:  # full pickle: only for files the user vouched for
            return torch.load(path, map_location="cpu", weights_only=False)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"{path}: not a checkpoint ({_first_line(err)})") from err
        raise CheckpointError(
            f"{path}: this file holds more than tensors, so the safe loader "
            f"(torch.load weights_only=True) refused it: {_unpickler_reason(err)}. Released "
            f"MMAction2 / AIM checkpoints keep numpy or mmcv objects in 'meta'. {TRUST_HINT}"
        ) from err
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(
            f"{path}: cannot be read: truncated, corrupt or not a PyTorch checkpoint "
            f"({_first_line(err)})"
        ) from err


def _state_dict_of(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a loaded object: a state dict, a wrapper around one, or a module."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    wrapped = False
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        # Training checkpoints: the weights sit beside `meta`, `optimizer`, `epoch`, ...
        for key in ("state_dict", "model", "module"):
            if isinstance(obj.get(key), Mapping):
                obj, wrapped = obj[key], True
                break
    odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise CheckpointError(
            f"{path}: no state dict found; these entries are not tensors: {listed(odd)}"
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DDP
        state = {k[len("module."):]: v for k, v in state.items()}
        wrapped = True
    return state, wrapped


def _read_safetensors(path: Path) -> RawCheckpoint:
    from safetensors.torch import load_file

    try:
        return RawCheckpoint(path, load_file(path, device="cpu"))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        reason = _first_line(err)
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from err


def _read_torchscript(path: Path, trust: bool) -> RawCheckpoint:
    """The archive's tensors, read without running its code; `torch.jit.load` only if trusted
    and the safe reader refused (that runs the archive's `__setstate__` code)."""
    try:
        return RawCheckpoint(path, read_script_archive(path), torchscript=True)
    except UnsafeArchive as err:
        if not trust:
            raise CheckpointError(
                f"{path}: a TorchScript archive whose weights cannot be read without running "
                f"its code: {err}. {TRUST_HINT}"
            ) from err
    except (OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: unreadable TorchScript archive ({_first_line(err)})") from err
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated, but OpenAI's archives exist only in that form.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            module = torch.jit.load(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - as for torch.load
        reason = _first_line(err)
        raise CheckpointError(f"{path}: unreadable TorchScript archive ({reason})") from err
    return RawCheckpoint(path, dict(module.state_dict()), torchscript=True)


def read_checkpoint(path: str | Path, *, trust: bool = False) -> RawCheckpoint:
    """Reads any supported file (or Hugging Face model folder) into a state dict on the CPU.

    Raises:
        CheckpointError: missing, empty, truncated or unreadable file; a pickle that needs more
            than the safe loader allows while `trust` is False.
    """
    path = Path(path)
    if path.is_dir():
        inside = [path / name for name in HF_FOLDER_FILES if (path / name).is_file()]
        if not inside:
            raise CheckpointError(f"{path}: a folder without {' or '.join(HF_FOLDER_FILES)}")
        path = inside[0]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if _is_safetensors(path):
        return _read_safetensors(path)
    if _is_torchscript(path):
        return _read_torchscript(path, trust)
    state, wrapped = _state_dict_of(_torch_load(path, trust), path)
    return RawCheckpoint(path, state, training_wrapper=wrapped)


# ============================================================================ detection
def detect_format(raw: RawCheckpoint) -> str:
    """Tells the format from the container and the key names.

    OpenAI and open_clip share their names; a bare `visual.` state dict is reported as `openai`,
    one inside a training wrapper (or with open_clip-only keys) as `open_clip`.
    """
    keys = list(raw.state)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if raw.torchscript:
        return "openai"
    if has("backbone."):
        return "aim"
    if has("vision_model.") or "embeddings.patch_embedding.weight" in keys:
        return "hf"
    if "cls_token" in keys or has("blocks.") or has("patch_embed."):
        return "timm"
    if has("visual."):
        return "open_clip" if raw.training_wrapper or "logit_bias" in keys else "openai"
    if "conv1.weight" in keys:
        video = has("head.") or "temporal_embedding" in keys or any(
            f".{name}." in k for k in keys for name in ADAPTER_NAMES
        )
        return "ours" if video else "openai"
    raise CheckpointError(
        f"{raw.path}: cannot tell the checkpoint format from its keys (first: "
        f"{listed(keys, 5)}); pass format= one of {', '.join(FORMATS)}"
    )


def listed(keys: list[str], limit: int = MAX_LISTED) -> str:
    """The first `limit` keys for a message, and how many more."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def is_image_part(name: str) -> bool:
    """Weights an image model has: the frozen backbone and `ln_post`."""
    return parameter_group(name) == "backbone" or name.startswith("ln_post.")


# ============================================================================ whole-model files
def convert_video_checkpoint(
    path: str | Path, *, trust: bool = False, image_hint: str
) -> tuple[RawCheckpoint, str, Converted]:
    """Reads a whole-AIM file (a released MMAction2 checkpoint, or ours) under our names.

    Internal: the one reading behind `load_aim_checkpoint` (which builds the model) and
    `engine.transfer` (which starts a run from one); users call those.

    Args:
        path: the file.
        trust: unpickle files that the safe loader refuses (trusted sources only).
        image_hint: what to do instead, said when the file holds an image model only.

    Returns:
        The file as read, its format, and its tensors under our names.

    Raises:
        CheckpointError: unreadable, or an image checkpoint rather than a video model.
    """
    raw = read_checkpoint(path, trust=trust)
    fmt = detect_format(raw)
    if fmt not in VIDEO_FORMATS:
        raise CheckpointError(f"{raw.path}: a {fmt} image checkpoint, not an AIM video model; "
                              f"{image_hint}")
    return raw, fmt, to_ours(raw.state, layout_for(fmt, list(raw.state)))


# ============================================================================ writing
def export_state_dict(model: AIMViT, format: str) -> dict[str, torch.Tensor]:
    """The model's weights in a foreign layout (tensors are copies).

    Image formats (`openai`, `open_clip`, `hf`, `timm`) get the image model: backbone and
    `ln_post` (no CLIP `proj`: AIM has none). `aim` and `ours` get the whole model. `hf` uses the
    published `vision_model.` names, which every transformers version loads.
    """
    state = model.state_dict()
    if format not in VIDEO_FORMATS:
        state = {k: v for k, v in state.items() if is_image_part(k)}
    return from_ours(state, layout_for(format))


def save_state_dict(model: AIMViT, path: str | Path, format: str = "openai") -> Path:
    """Writes `export_state_dict(model, format)`: safetensors for a `.safetensors` path, else
    `torch.save` (an `aim` file as the release wraps it, under `state_dict`).

    The file loads back through `load_pretrained` (or `load_aim_checkpoint` for `aim`/`ours`).
    """
    path = Path(path)
    state = export_state_dict(model, format)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path, metadata={"format": "pt"})
    else:
        torch.save({"state_dict": state} if format == "aim" else state, path)
    return path
