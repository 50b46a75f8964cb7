"""Explain real held-out digits with the embedded model and save a heatmap grid.

python examples/digits_heatmaps.py [OUT.png]
"""

from __future__ import annotations

import sys

import relprop
from relprop import viz
from relprop.models import digits_test_set, load_digits_model

model = load_digits_model()
test = digits_test_set()
images, labels = test.images[:6], test.labels[:6]

explainer = relprop.Explainer(model, "epsilon-gamma-box", low=0.0, high=1.0, epsilon=0.25)
result = explainer(images)
print("labels     ", labels.tolist())
print("predicted  ", result.target.tolist())
print(result.ledger.table(sample=0, top=4))

rows = [[viz.to_image(img), viz.heatmap(r)] for img, r in zip(images, result.relevance, strict=True)]
out = sys.argv[1] if len(sys.argv) > 1 else "digits_heatmaps.png"
viz.grid(rows, column_titles=["digit", "relevance"], row_titles=[str(int(c)) for c in labels]).save(out)
print("wrote", out)
