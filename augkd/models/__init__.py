"""Networks by name: classifiers (torchvision, small CNNs, pretrained ccexam teachers) and AuG-KD's G, E, A."""

from augkd.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelInfo,
    create_model,
    get_model_info,
    list_models,
    register_model,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelInfo",
    "create_model",
    "get_model_info",
    "list_models",
    "register_model",
]
