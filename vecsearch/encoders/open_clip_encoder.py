"""open_clip models: any architecture by name with a pretrained tag or checkpoint file, or a model directory.

Weights are fetched through `hub` (cache first, clear error offline) and then handed to open_clip as a
local file, so open_clip itself never reaches the network. The model's own preprocess and tokenizer are
used, so stored vectors equal what `model.encode_image(preprocess(image))` returns.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ModelError, ModelNotFoundError, ModelUnavailableError, first_line
from . import hub
from .base import IMAGE, TEXT, ModelSpec, batched, fingerprint_tensors, pick_device

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
_TAG_PREPROCESS_KEYS = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


class OpenClipEncoder:
    """An open_clip model with its preprocess and tokenizer behind the Encoder interface."""

    modalities = frozenset({IMAGE, TEXT})

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        spec: ModelSpec,
        device: str = "cpu",
        batch_size: int = 32,
        inference: str = "auto",
        cache_dir: str | None = None,
    ) -> None:
        import torch

        from .inference import ImageInference

        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        self._torch = torch
        self._hf_pad_token_id = _hf_pad_token_id(model)
        self._causal_text = causal_clip_text(model)
        image_size = getattr(getattr(model, "visual", None), "image_size", None)
        self.input_size = max(image_size) if isinstance(image_size, (tuple, list)) else image_size
        with torch.inference_mode():
            self.logit_scale = float(model.logit_scale.exp().item())
        preprocess_cfg = _preprocess_cfg(model)
        self.fingerprint = fingerprint_tensors(
            model.state_dict().items(), extra=json.dumps(preprocess_cfg, sort_keys=True, default=str)
        )
        self.dim = _output_dim(model) or int(self.embed_texts([""]).shape[1])
        self.inference = ImageInference(model, device, self.fingerprint, inference, cache_dir)
        self.weight_files: list[Path] = []  # the files it was loaded from, for `weights_id`

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for chunk in batched(list(texts), self.batch_size):
                tokens = self._trim_padding(self.tokenizer(list(chunk))).to(self.device)
                if self._causal_text:
                    vectors = torch.nn.functional.normalize(encode_text_trimmed(self.model, tokens), dim=-1)
                else:
                    vectors = self.model.encode_text(tokens, normalize=True)
                chunks.append(vectors.float().cpu().numpy())
        return _stack(chunks, getattr(self, "dim", 0))

    def _trim_padding(self, tokens: Any) -> Any:
        """Hugging Face text towers pool over their attention mask, and causal CLIP towers never look
        ahead, so the padding columns after the longest text change nothing but cost time (a short
        prompt padded to 77 tokens is ~5x slower)."""
        pad = 0 if self._causal_text else self._hf_pad_token_id
        if pad is None or tokens.shape[1] <= 1:
            return tokens
        used = (tokens != pad).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]

    def prepare_image(self, image: Image.Image) -> Any:
        return self.preprocess(image)

    def embed_prepared_images(self, prepared: Sequence[Any]) -> np.ndarray:
        """Unit vectors of preprocessed pictures (tensors, or arrays from the torch-free transform), in the
        inference mode that `self.inference` settled on."""
        torch = self._torch
        chunks = []
        for chunk in batched(list(prepared), self.batch_size):
            pixels = torch.stack([torch.as_tensor(p) for p in chunk])
            chunks.append(self.inference.run(pixels))
        return _stack(chunks, self.dim)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_prepared_images([self.prepare_image(image) for image in images])


def load_open_clip(
    spec: ModelSpec,
    device: str | None = None,
    batch_size: int = 32,
    cache: str | None = None,
    inference: str = "auto",
) -> OpenClipEncoder:
    """Build the model named by `spec`, fetching weights into the cache only when they are missing."""
    import open_clip

    device = pick_device(device)
    name, kwargs = _resolve(spec, cache)
    tokenizer = None
    if not name.startswith(LOCAL_DIR_PREFIX):
        text_cfg, tokenizer = _local_hf_text_tower(name, cache)
        if text_cfg is not None:
            kwargs["text_cfg"] = text_cfg
    try:
        built = _create_without_random_init(name, kwargs, device)
        model, _, preprocess = built or open_clip.create_model_and_transforms(name, device=device, **kwargs)
        tokenizer = tokenizer or open_clip.get_tokenizer(name)
    except (ModelNotFoundError, ModelUnavailableError):
        raise
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"refused to load {spec}: its checkpoint holds pickled objects other than tensors, and unpickling "
            "them could run code; convert the checkpoint to safetensors"
        ) from exc
    except OSError as exc:
        # Models with Hugging Face text towers fetch configs/tokenizers through transformers.
        raise ModelUnavailableError(f"could not load {spec}: {first_line(exc)}; {hub.OFFLINE_HINT}") from exc
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(f"could not load {spec}: {first_line(exc)}") from exc
    encoder = OpenClipEncoder(
        model, preprocess, tokenizer, spec, device=device, batch_size=batch_size, inference=inference, cache_dir=cache
    )
    from .weights_id import folder_files, remember

    if name.startswith(LOCAL_DIR_PREFIX):
        encoder.weight_files = folder_files(Path(name[len(LOCAL_DIR_PREFIX) :]))
    elif kwargs.get("pretrained"):
        encoder.weight_files = [Path(kwargs["pretrained"])]
    remember(spec, encoder.weight_files, encoder.fingerprint, cache)
    return encoder


def _output_dim(model: Any) -> int | None:
    """The embedding size, read off a plain CLIP's text projection (a text forward pass costs ~0.1 s of
    a cold query); None for other towers, whose size is then measured."""
    import torch

    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.nn.Parameter) and projection.ndim == 2:
        return int(projection.shape[1])
    if isinstance(projection, torch.nn.Linear):
        return int(projection.out_features)
    return None


def _create_without_random_init(name: str, kwargs: dict[str, Any], device: str) -> tuple[Any, Any, Any] | None:
    """open_clip's model and transforms, with the checkpoint's tensors put straight into the modules.

    open_clip first fills every weight with random values and then overwrites them all from the
    checkpoint; for ViT-B-32 that is ~1 s of a cold query. Here the modules are made on the meta device
    (no memory, no initialisation) and the checkpoint is loaded by open_clip's own `load_checkpoint`
    with its tensors assigned. Only plain CLIP models from a checkpoint file take this path, and only
    if nothing is left without data; anything else returns None and loads the usual way.
    """
    import functools

    import open_clip
    import torch

    checkpoint = kwargs.get("pretrained")
    if not checkpoint or not Path(checkpoint).is_file() or "text_cfg" in kwargs:
        return None
    try:
        with torch.device("meta"):
            model, train_transform, preprocess = open_clip.create_model_and_transforms(
                name, device="meta", load_weights=False, **kwargs
            )
        if type(model) is not open_clip.CLIP:
            return None
        model.load_state_dict = functools.partial(model.load_state_dict, assign=True)
        try:
            open_clip.load_checkpoint(model, checkpoint)
        finally:
            del model.load_state_dict
    except (TypeError, ValueError, RuntimeError, KeyError, NotImplementedError):
        return None
    # The one tensor that is not in a checkpoint: the text tower's causal mask, as open_clip builds it.
    if getattr(model, "attn_mask", None) is not None:
        length = int(model.context_length)
        model.attn_mask = torch.empty(length, length).fill_(float("-inf")).triu_(1)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return None
    return model.float().to(device), train_transform, preprocess


def _resolve(spec: ModelSpec, cache: str | None) -> tuple[str, dict[str, Any]]:
    """The (model_name, keyword arguments) to give open_clip so that it loads only local files."""
    name = spec.name
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = Path(name[len(LOCAL_DIR_PREFIX) :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ModelNotFoundError(f"{folder} is not an open_clip model directory (no open_clip_config.json)")
        return f"{LOCAL_DIR_PREFIX}{folder}", {}
    if name.startswith(HF_HUB_PREFIX):
        return _resolve_hf_hub(name[len(HF_HUB_PREFIX) :], cache)
    return name, _resolve_builtin(name, spec.pretrained, cache)


def _resolve_hf_hub(repo_id: str, cache: str | None) -> tuple[str, dict[str, Any]]:
    from open_clip.constants import (
        HF_CONFIG_NAME,
        HF_SAFE_WEIGHTS_NAME,
        HF_WEIGHTS_NAME,
    )

    what = f"open_clip model hf-hub:{repo_id}"
    config = hub.fetch_hf_file(repo_id, HF_CONFIG_NAME, what, cache)
    weights = hub.cached_hf_file(repo_id, HF_SAFE_WEIGHTS_NAME, cache) or hub.cached_hf_file(
        repo_id, HF_WEIGHTS_NAME, cache
    )
    if weights is None:
        try:
            weights = hub.fetch_hf_file(repo_id, HF_SAFE_WEIGHTS_NAME, what, cache)
        except hub.HubFileMissingError:  # an older repository, with pickled weights only
            weights = hub.fetch_hf_file(repo_id, HF_WEIGHTS_NAME, what, cache)
    # The hub cache keeps a repo's files side by side in one snapshot folder: load it as a local dir.
    return f"{LOCAL_DIR_PREFIX}{os.path.dirname(config)}", {}


def _resolve_builtin(name: str, pretrained: str | None, cache: str | None) -> dict[str, Any]:
    import open_clip

    if name not in open_clip.list_models():
        raise ModelNotFoundError(f"unknown open_clip model '{name}'; `vecsearch models --all` lists the names")
    if not pretrained:
        raise ModelNotFoundError(
            f"open_clip model {name} needs --pretrained: a tag ({_tags(name)}) or a checkpoint file"
        )
    candidate = Path(pretrained).expanduser()
    if candidate.is_file():
        return {"pretrained": str(candidate)}
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        if any(sep in pretrained for sep in ("/", os.sep)) or candidate.suffix:
            raise ModelNotFoundError(f"checkpoint file not found: {pretrained}")
        raise ModelNotFoundError(
            f"unknown pretrained tag '{pretrained}' for open_clip model {name}; available: {_tags(name)}"
        )
    checkpoint = _fetch_tag_weights(name, pretrained, tag_cfg, cache)
    kwargs: dict[str, Any] = {"pretrained": checkpoint}
    for key, argument in _TAG_PREPROCESS_KEYS.items():
        if tag_cfg.get(key) is not None:
            kwargs[argument] = tag_cfg[key]
    return kwargs


def _fetch_tag_weights(name: str, tag: str, tag_cfg: dict[str, Any], cache: str | None) -> str:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    what = f"open_clip model {name} ({tag})"
    if tag_cfg.get("file"):
        return str(tag_cfg["file"])
    if tag_cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" means the default file name, "org/repo/file" names one.
        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        safe_names = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
        if filename.endswith((".bin", ".pth")) and filename != HF_WEIGHTS_NAME:
            safe_names.append(filename[:-4] + ".safetensors")
        for candidate in [*safe_names, filename]:
            found = hub.cached_hf_file(repo_id, candidate, cache)
            if found:
                return found
        for candidate in safe_names:
            try:
                return hub.fetch_hf_file(repo_id, candidate, what, cache)
            except hub.HubFileMissingError:  # not published as safetensors; a failed download is not this
                continue
        return hub.fetch_hf_file(repo_id, filename, what, cache)
    if tag_cfg.get("url"):
        return hub.fetch_url(tag_cfg["url"], what, cache)
    raise ModelNotFoundError(f"{what} has no download source in open_clip's registry")


_TOKENIZER_FILES = ["*.json", "*.txt", "*.model", "*.bpe", "*.tiktoken", "spiece*", "sentencepiece*"]


def _local_hf_text_tower(name: str, cache: str | None) -> tuple[dict[str, Any] | None, Any]:
    """For architectures whose text tower or tokenizer comes from the Hugging Face hub (multilingual
    models): fetch its config and tokenizer files through `hub` and point open_clip at the local copy,
    so that transformers never goes to the network by itself. The CLIP checkpoint holds the weights."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    config = open_clip.get_model_config(name) or {}
    text_cfg = dict(config.get("text_cfg", {}))
    model_name = text_cfg.get("hf_model_name")
    tokenizer_name = text_cfg.get("hf_tokenizer_name") or model_name
    if not model_name and not tokenizer_name:
        return None, None
    what = f"the text-tower config and tokenizer of open_clip {name}"
    hint = (
        "they are fetched once (a few MB) on a machine with a network and then cached; or use an "
        "architecture without a Hugging Face text tower"
    )
    if model_name and not Path(model_name).is_dir():
        text_cfg["hf_model_name"] = hub.fetch_hf_snapshot(model_name, what, _TOKENIZER_FILES, cache, hint)
    text_cfg["hf_model_pretrained"] = False
    local_tokenizer = tokenizer_name
    if tokenizer_name and not Path(tokenizer_name).is_dir():
        local_tokenizer = hub.fetch_hf_snapshot(tokenizer_name, what, _TOKENIZER_FILES, cache, hint)
        text_cfg["hf_tokenizer_name"] = local_tokenizer
    tokenizer = HFTokenizer(
        local_tokenizer,
        context_length=text_cfg.get("context_length", 77),
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        **text_cfg.get("tokenizer_kwargs", {}),
    )
    return text_cfg, tokenizer


def is_tag_cached(name: str, tag: str, cache: str | None = None) -> bool:
    """Are the weights for this open_clip tag already on this machine? Never touches the network."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    tag_cfg = open_clip.get_pretrained_cfg(name, tag)
    if not tag_cfg:
        return False
    if tag_cfg.get("hf_hub"):
        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        return any(hub.cached_hf_file(repo_id, n, cache) for n in names)
    if tag_cfg.get("url"):
        return (Path(hub.url_cache_dir(cache)) / os.path.basename(tag_cfg["url"])).is_file()
    return False


def _tags(name: str) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    return ", ".join(tags) if tags else "none published"


def causal_clip_text(model: Any) -> bool:
    """Can the padding be left off for this CLIP text tower? Yes when its attention is causal (no token
    sees the padding after it) and it pools a token at or before the end token. Only plain blocks
    qualify: `encode_text_trimmed` runs them step by step."""
    import open_clip
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    if type(model) is not open_clip.CLIP or getattr(model, "attn_mask", None) is None:
        return False
    if getattr(model, "text_pool_type", None) not in ("argmax", "eos", "first"):
        return False
    transformer = getattr(model, "transformer", None)
    if transformer is None or not getattr(transformer, "batch_first", False):
        return False
    for block in transformer.resblocks:
        attn = getattr(block, "attn", None)
        if (
            type(block) is not ResidualAttentionBlock
            or hasattr(block, "ln_1_kv")
            or type(attn) is not torch.nn.MultiheadAttention
            or not attn.batch_first
            or not attn._qkv_same_embed_dim
            or attn.bias_k is not None
            or attn.add_zero_attn
        ):
            return False
    return True


def encode_text_trimmed(model: Any, tokens: Any) -> Any:
    """open_clip's `CLIP.encode_text` (unnormalised) over as many positions as `tokens` has: the library's
    own method always adds all 77 positional embeddings. Only for towers `causal_clip_text` accepts;
    equal to `encode_text` to rounding (tested, and checked again before a text export is written).
    The attention is written with shapes that stay symbolic when traced for ONNX."""
    import torch
    from open_clip.transformer import text_global_pool

    functional = torch.nn.functional
    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length].to(x.dtype)
    for block in model.transformer.resblocks:
        attn = block.attn
        qkv = functional.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in qkv)
        attended = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + block.ls_1(attn.out_proj(attended.transpose(1, 2).flatten(2)))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection


def _hf_pad_token_id(model: Any) -> int | None:
    """The pad id of a Hugging Face text tower that masks padding (mean pooling), else None."""
    from open_clip.hf_model import HFTextEncoder, MeanPooler

    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder) or not isinstance(text.pooler, MeanPooler):
        return None
    pad = getattr(text.config, "pad_token_id", None)
    return int(pad) if pad is not None else None


def _preprocess_cfg(model: Any) -> dict[str, Any]:
    from open_clip.model import get_model_preprocess_cfg

    return dict(get_model_preprocess_cfg(model))


def _stack(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
