"""Networks by name: classifiers (torchvision, small CNNs, pretrained ccexam teachers) and AuG-KD's G, E, A."""

# Importing the model files registers their architectures in the registry (a leaf they import from).
from augkd.models import generative, small, torchvision_models  # noqa: F401
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
