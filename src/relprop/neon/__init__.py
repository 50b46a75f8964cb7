"""NEON (neuralization–propagation): explain scikit-learn models with relevance per feature.

A model that is not a neural network is first rewritten, exactly, as a small torch network
(:func:`neuralize`), then explained with LRP:

* ``KMeans`` / ``MiniBatchKMeans``: the evidence for a cluster, a linear layer of centroid
  pairs and min-pooling, explained with the midpoint rule and soft-min redistribution
  (Kauffmann et al., "From clustering to cluster explanations via neural networks");
* ``OneClassSVM`` (RBF) and ``KernelDensity`` (Gaussian): an outlier score as a soft-min over
  squared distances, explained by soft-min redistribution and the squared-distance rule
  (Kauffmann et al., "Towards explaining anomalies");
* linear models and ``MLPClassifier`` / ``MLPRegressor``: torch modules explained by
  relprop's engine with any composite or method, optionally against a reference point.

Scalers in front of the model (a ``Pipeline``) are folded into the first layer, so relevance
is per original feature. Needs scikit-learn (``pip install relprop[neon]``); pandas is optional.

Examples
--------
>>> from relprop import neon
>>> result = neon.explain(kmeans, X)                 # evidence for each row's cluster
>>> result.relevance.shape == X.shape
True
>>> result.ledger.closes()
True
"""

from __future__ import annotations

from .explain import explain
from .features import onehot_groups, relevance_frame
from .networks import (
    NeonNetwork,
    NeuralizedKernelDensity,
    NeuralizedKMeans,
    NeuralizedOneClassSVM,
    SoftMinDistanceNetwork,
    TabularNetwork,
)
from .neuralize import neuralize, supported
from .rules import MidpointRule, SoftMinPoolingRule, SquaredDistanceRule

__all__ = [
    "MidpointRule",
    "NeonNetwork",
    "NeuralizedKMeans",
    "NeuralizedKernelDensity",
    "NeuralizedOneClassSVM",
    "SoftMinDistanceNetwork",
    "SoftMinPoolingRule",
    "SquaredDistanceRule",
    "TabularNetwork",
    "explain",
    "neuralize",
    "onehot_groups",
    "relevance_frame",
    "supported",
]
