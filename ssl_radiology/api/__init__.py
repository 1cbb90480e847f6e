"""The Python API of ssl-radiology: one function per job, each taking a request and returning a record.

The ``ssl-rad`` commands, the experiment runner, the notebooks and the tests all go through these
functions; the commands only translate their arguments into requests. Example::

    from ssl_radiology.api import BackboneRef, EvalRequest, evaluate
    result = evaluate(EvalRequest("knn", BackboneRef("runs/dino-radnet"), "organamnist", seeds=(0, 1, 2)))
    print(result.results_csv)

Importing this package is cheap (no torch); each function imports what it needs when called.
"""

from __future__ import annotations

from typing import Any

from ssl_radiology.api.types import (
    AnalyzeRequest,
    BackboneRef,
    CompareRequest,
    EvalRequest,
    EvalResult,
    PrepareRequest,
    PretrainRequest,
    PretrainResult,
)

__all__ = [
    "AnalyzeRequest",
    "BackboneRef",
    "CompareRequest",
    "EvalRequest",
    "EvalResult",
    "PrepareRequest",
    "PretrainRequest",
    "PretrainResult",
    "analyze",
    "compare",
    "evaluate",
    "prepare",
    "pretrain",
]


def prepare(request: PrepareRequest) -> Any:
    """Decode sources into a prepared dataset; returns ``data.prepare.PrepareSummary``."""
    from ssl_radiology.data.prepare import CHUNK_FILES, check_options, prepare_dataset

    chunk_files = CHUNK_FILES if request.chunk_files is None else request.chunk_files
    check_options(request.image_size, request.workers, request.modality, chunk_files, request.max_image_mb)
    return prepare_dataset(
        list(request.sources),
        request.out,
        image_size=request.image_size,
        workers=request.workers,
        modality=request.modality,
        salt=request.salt,
        chunk_files=chunk_files,
        progress=request.progress,
        keep_paths=request.keep_paths,
        max_image_mb=request.max_image_mb,
        verify=request.verify,
        shard=request.shard,
        merge=request.merge,
    )


def pretrain(request: PretrainRequest) -> PretrainResult:
    """Pre-train one backbone; returns the run folder and the number of optimizer steps."""
    from ssl_radiology.api.pretraining import run_pretrain

    return run_pretrain(request)


def evaluate(request: EvalRequest) -> EvalResult:
    """Evaluate one backbone on one task over the request's seeds (finished seeds are skipped)."""
    from ssl_radiology.evaluation.runner import run_evaluation

    return run_evaluation(request)


def compare(request: CompareRequest) -> dict[str, Any]:
    """Comparison tables of result folders: ``{"table", "pairs" (or None), "paths": {kind: Path}}``."""
    from ssl_radiology.evaluation.compare import comparison_table, gather, pair_table, write_outputs

    request.check()
    rows = gather(list(request.results))
    if request.metrics:
        rows = rows[rows["metric"].isin(list(request.metrics))]
    table = comparison_table(rows, request.baseline, request.bootstrap)
    pairs = pair_table(rows, request.pairs, request.bootstrap) if request.pairs else None
    return {"table": table, "pairs": pairs, "paths": write_outputs(table, request.out, pairs)}


def analyze(request: AnalyzeRequest) -> dict[str, Any]:
    """Run one feature-space analysis; returns its JSON record (with a Markdown ``caption``)."""
    from pathlib import Path

    from ssl_radiology.analysis.analyses import run_analysis
    from ssl_radiology.analysis.settings import load_settings

    settings = load_settings(
        request.image_size, list(request.overrides), request.device, request.feature_cache, request.pooling
    )
    return run_analysis(
        request.analysis,
        request.backbones,
        request.data,
        settings,
        Path(request.out),
        max_samples=request.max_samples,
        seed=request.seed,
        per_layer=request.per_layer,
    )
