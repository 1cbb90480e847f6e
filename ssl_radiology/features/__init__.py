"""The feature layer: frozen-backbone features for evaluation, analysis and ``ssl-rad embed``.

It sits below both :mod:`ssl_radiology.evaluation` and :mod:`ssl_radiology.analysis`, so the two never
extract the same features twice and evaluation never needs analysis:

- :mod:`~ssl_radiology.features.extract` — model input (resize, CT window, normalisation) and the batched
  extraction loop (pooled features, patch tokens);
- :mod:`~ssl_radiology.features.cache` — the on-disk cache and its key (weights, data, image size, window,
  pooling);
- :mod:`~ssl_radiology.features.extractor` — a backbone reference + options → its model and cached features;
- :mod:`~ssl_radiology.features.layers` — intermediate-layer activations through forward hooks, pooled
  ``mean`` / ``cls`` / ``flat``;
- :mod:`~ssl_radiology.features.knn` — the weighted kNN (DINO protocol, exact faiss search).

Submodules import torch and faiss only when a function needs them, so that importing any of them (for a
command's ``--help``) costs numpy at most.
"""
