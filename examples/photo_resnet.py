"""Explain a torchvision ResNet on a real photo (scikit-image's astronaut) and save an overlay.

    python examples/photo_resnet.py [WEIGHTS.pt] [OUT.png]

Without a weights file the network has random weights (no download happens); with
torchvision's ImageNet weights saved as a state dict the heatmap shows what the classifier uses.
"""

from __future__ import annotations

import sys

import torch
import torchvision
from PIL import Image
from skimage import data

import relprop
from relprop import viz
from relprop.models.loading import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess

model = torchvision.models.resnet18()
if len(sys.argv) > 1:
    model.load_state_dict(torch.load(sys.argv[1], map_location="cpu", weights_only=True))
model.eval()

photo = Image.fromarray(data.astronaut())
x = ImagePreprocess(256, 224, IMAGENET_MEAN, IMAGENET_STD)(photo).unsqueeze(0)
low, high = relprop.bounds_from_normalization(IMAGENET_MEAN, IMAGENET_STD)

result = relprop.explain(model, x, composite="epsilon-gamma-box", low=low, high=high)
print("explained class", int(result.target[0]), "score", float(result.score[0]))
print("ledger closes:", result.ledger.closes(), "| input relevance", float(result.ledger.input_relevance[0]))

picture = viz.to_image(x[0], IMAGENET_MEAN, IMAGENET_STD)
out = sys.argv[2] if len(sys.argv) > 2 else "photo_resnet.png"
viz.grid(
    [[picture, viz.heatmap(result.relevance[0], clip_percentile=99.5), viz.overlay(picture, result.relevance[0])]],
    column_titles=["input", "heatmap", "overlay"],
    cell_size=224,
).save(out)
print("wrote", out)
