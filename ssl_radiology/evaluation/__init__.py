"""Transfer evaluation: does a self-supervised checkpoint beat ImageNet and random initialisation?

Protocols (``knn``, ``linear``, ``finetune``) run per seed on a labelled :mod:`~.tasks` task with
patient-level :mod:`~.splits`, score with :mod:`~.metrics`, store per-seed rows with :mod:`~.results`
(resumable) and are summarised with :mod:`~.stats` / :mod:`~.compare`. Submodules are imported on use, so
importing this package stays light.
"""
