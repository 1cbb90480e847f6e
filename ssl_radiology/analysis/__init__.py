"""Feature-space analysis: CKA (full, RBF, minibatch, layer-wise), domain metrics, UMAP, plots.

What ``ssl-rad analyze`` and the notebooks in ``analysis/`` run, one job per module:

- :mod:`~.settings` — shared settings (eval config, image size, device, layer pooling) and backbone features
  through :mod:`ssl_radiology.features` (the same cache as ``ssl-rad knn``);
- :mod:`~.sampling` — a seeded sample of images per domain from ``--data`` sources / tasks;
- :mod:`~.analyses` — the four analyses (``cka``, ``knn``, ``umap``, ``domains``) writing JSON + PNG;
- :mod:`~.output` — captions and JSON files; :mod:`~.plots` — figures;
- :mod:`~.cka`, :mod:`~.layers`, :mod:`~.domains`, :mod:`~.umap_view` — pure functions on arrays / models.

Weighted kNN lives in :mod:`ssl_radiology.features.knn` (evaluation uses it too). Import the submodules
you need: this package imports nothing, so that importing it stays cheap.
"""
