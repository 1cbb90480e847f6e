"""Feature-space analysis: CKA (full, RBF, minibatch, layer-wise), weighted kNN, domain metrics, UMAP, plots.

Pure functions on numpy arrays or torch tensors; used by ``ssl-rad analyze``, the evaluation engine (kNN)
and the notebooks. ``umap_view`` (umap-learn, numba) and ``plots`` (matplotlib) are imported from their
submodules so that importing this package stays cheap.
"""

from ssl_radiology.analysis.cka import (
    MinibatchCKA,
    MultiLayerMinibatchCKA,
    cka_from_grams,
    linear_cka,
    rbf_cka,
)
from ssl_radiology.analysis.domains import domain_metrics, frechet_distance
from ssl_radiology.analysis.knn import KnnVotes, knn_accuracy, knn_predict, knn_predict_multilabel
from ssl_radiology.analysis.layers import layer_cka, select_layers

__all__ = [
    "KnnVotes",
    "MinibatchCKA",
    "MultiLayerMinibatchCKA",
    "cka_from_grams",
    "domain_metrics",
    "frechet_distance",
    "knn_accuracy",
    "knn_predict",
    "knn_predict_multilabel",
    "layer_cka",
    "linear_cka",
    "rbf_cka",
    "select_layers",
]
