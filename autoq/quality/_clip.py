"""CLIP score and zero-shot classification with any local transformers `CLIPModel` folder.

The score is the one torchmetrics defines, ``max(100 * cos(E_image, E_text), 0)`` per pair,
computed the way `torchmetrics.multimodal.CLIPScore` feeds the model (the processor receives
uint8-range image tensors, the text is padded to the longest prompt). torchmetrics itself only
accepts hub ids that contain "openai" (or a callable), so this class wraps a local folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    ImageInput = torch.Tensor | Sequence[Image.Image | np.ndarray | torch.Tensor]

__all__ = ["ClipScorer"]


def _as_uint8_chw(image: Any) -> torch.Tensor:
    """One image as a uint8-range CHW float tensor, the layout torchmetrics passes on."""
    import numpy as np
    import torch
    from PIL import Image

    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ConfigError(f"Expected an HxWx3 array, but got shape {image.shape}.")
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # copy: PIL arrays are read-only
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ConfigError(
            "Expected PIL images, HxWx3 arrays or 3xHxW tensors, "
            f"but got {type(image).__name__} with shape {getattr(image, 'shape', None)}."
        )
    if image.is_floating_point():
        if image.max() <= 1.0:  # [0, 1] floats, as diffusers' output_type="pt" returns
            image = image * 255.0
        return image.round().clamp(0, 255).to(torch.uint8)
    return image.to(torch.uint8)


def _pooled(output: Any) -> torch.Tensor:
    """The projected embedding, whether transformers returned a tensor or an output object."""
    return getattr(output, "pooler_output", output)


class _TorchmetricsModel:
    """A `CLIPModel` view whose feature methods return tensors, as torchmetrics expects."""

    def __init__(self, model: CLIPModel) -> None:
        self.model = model
        self.config = model.config

    def to(self, device: Any) -> _TorchmetricsModel:
        self.model.to(device)
        return self

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _pooled(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _pooled(self.model.get_text_features(*args, **kwargs))


class ClipScorer:
    """Scores (image, prompt) agreement with a CLIP model, as torchmetrics' `CLIPScore` does.

    Args:
        model: A transformers ``CLIPModel``.
        processor: The matching ``CLIPProcessor`` (tokenizer + image processor).
    """

    def __init__(self, model: CLIPModel, processor: CLIPProcessor) -> None:
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ClipScorer:
        """Load a ``CLIPModel`` + ``CLIPProcessor`` folder (as written by ``save_pretrained``).

        Raises:
            ModelNotFoundError: The folder has no CLIP model.
        """
        from transformers import CLIPModel, CLIPProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"Expected a CLIPModel folder with config.json at {path}, but found none."
            )
        return cls(CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path))

    def as_torchmetrics(self) -> tuple[_TorchmetricsModel, CLIPProcessor]:
        """``(model, processor)`` for torchmetrics' ``model_name_or_path`` callable.

        torchmetrics 1.9 expects ``get_*_features`` to return tensors, while transformers 5
        returns model outputs; the adapter bridges the two, so
        ``CLIPScore(model_name_or_path=scorer.as_torchmetrics)`` works on a local model.
        """
        return _TorchmetricsModel(self.model), self.processor

    def image_features(self, images: ImageInput) -> torch.Tensor:
        """L2-normalised image embeddings, one row per image."""
        import torch

        batch = [_as_uint8_chw(image) for image in images]
        if not batch:
            raise ConfigError("Expected at least one image, but got none.")
        inputs = self.processor(images=batch, return_tensors="pt", padding=True)
        with torch.no_grad():
            features = self.model.get_image_features(inputs["pixel_values"])
        features = _pooled(features)
        return features / features.norm(p=2, dim=-1, keepdim=True)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, one row per text."""
        import torch

        if isinstance(texts, str) or not texts:
            raise ConfigError("Expected a non-empty list of strings.")
        inputs = self.processor(
            text=list(texts), return_tensors="pt", padding=True, truncation=True
        )
        with torch.no_grad():
            features = self.model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        features = _pooled(features)
        return features / features.norm(p=2, dim=-1, keepdim=True)

    def similarity(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        """``100 * cos`` between every image and every text, shape ``(images, texts)``."""
        return 100.0 * self.image_features(images) @ self.text_features(texts).T

    def score(self, images: ImageInput, prompts: Sequence[str]) -> torch.Tensor:
        """Per-pair CLIP score ``max(100 * cos, 0)`` of ``images[i]`` with ``prompts[i]``.

        Args:
            images: PIL images, HxWx3 uint8 arrays or 3xHxW tensors (uint8 range, or floats
                in [0, 1]), or one NCHW tensor.
            prompts: One prompt per image.

        Returns:
            A float tensor of shape ``(len(prompts),)``, each value in [0, 100].

        Raises:
            ConfigError: The number of images and prompts differ.
        """
        if len(images) != len(prompts):
            raise ConfigError(
                f"Expected one prompt per image, but got {len(images)} images "
                f"and {len(prompts)} prompts."
            )
        cosine = (self.image_features(images) * self.text_features(prompts)).sum(dim=-1)
        return (100.0 * cosine).clamp(min=0.0)

    def classify(self, images: ImageInput, labels: Sequence[str]) -> torch.Tensor:
        """Zero-shot classification: the index of the best-matching label for each image.

        Args:
            images: As in `score`.
            labels: Candidate captions, e.g. ``["a red circle", "a blue circle"]``.

        Returns:
            A long tensor of shape ``(len(images),)`` indexing ``labels``.
        """
        return self.similarity(images, labels).argmax(dim=-1)
