"""Every README command that names chexpert, nih-cxr14, mimic-cxr, chestmnist or organamnist runs on fake
official downloads (``tests/datasets.py``), and no output byte — results, manifests, rejected lists, skipped
lists, feature caches, run folders — holds a patient identifier of the fixtures' label files."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_configs
from datasets import Fixture, write_chexpert, write_medmnist, write_mimic, write_nih
from test_prepare_support import write_ct_series

from ssl_radiology.cli import main

TINY = [
    "--checkpoint",
    "random",
    "--backbone",
    "resnet18",
    "--image-size",
    "32",
    "--seeds",
    "0",
    "--device",
    "cpu",
]
SMALL_NATURAL = (
    "kind: natural\ncount: 24\nseed: 0\nmin_fraction: 0.2\nmax_fraction: 1.0\nimage_size: 64\nworkers: 1\n"
)
FAST_FINETUNE = ["finetune.min_steps=2", "finetune.epochs=1", "finetune.evals=1", "finetune.base_lrs=[0.001]"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Fixture]]]:
    """Fake downloads (outside ``out``) and an output folder holding the cache and every result."""
    downloads, out = tmp_path_factory.mktemp("downloads"), tmp_path_factory.mktemp("outputs")
    fixtures = [
        write_chexpert(downloads),
        write_nih(downloads / "ChestX-ray14"),
        write_mimic(downloads / "mimic-cxr-jpg" / "2.0.0"),
        write_medmnist(downloads / "medmnist"),
    ]
    write_ct_series(downloads / "radnet" / "scan1", 4)
    roots = dict(
        zip(["CHEXPERT_ROOT", "NIH_CXR14_ROOT", "MIMIC_CXR_ROOT", "MEDMNIST_ROOT"], fixtures, strict=True)
    )
    with pytest.MonkeyPatch.context() as mp:
        for env, fixture in roots.items():
            mp.setenv(env, str(fixture.root))
        mp.setenv("RADNET_ROOT", str(downloads / "radnet"))
        mp.setenv("SSL_RAD_CACHE", str(out / "cache"))
        mp.setenv("SSL_RAD_CONFIGS", str(copy_configs(downloads / "configs", {"natural": SMALL_NATURAL})))
        mp.setenv("SSL_RAD_KEY", "test-installation-key")
        yield out, fixtures


@pytest.mark.parametrize(
    "command",
    [
        "knn --data organamnist --out results/knn-dino",
        "linear-eval --data organamnist --out results/lin-in",
        "finetune --data chexpert --fraction 0.5 --out results/ft-dino-1pct",
        "knn --data chexpert --shots 5 --out results/knn-rnd",
        "knn --data nih-cxr14 --out results/knn-nih",
        "knn --data mimic-cxr --out results/knn-mimic",
        "knn --data chestmnist --out results/knn-chest",
    ],
)
def test_readme_evaluation_commands_run_on_official_layouts(world, command, capsys):
    out, _ = world
    words = [w if not w.startswith("results/") else str(out / w) for w in command.split()]
    extra = FAST_FINETUNE if words[0] == "finetune" else []
    assert main([*words, *TINY, *extra]) == 0, capsys.readouterr().err
    results = Path(words[words.index("--out") + 1])
    assert len(pd.read_csv(results / "results.csv")) >= 1
    task = words[words.index("--data") + 1]
    if task in {"chexpert", "nih-cxr14", "mimic-cxr"}:  # each fixture has a missing and an unreadable image
        skipped = pd.read_csv(results / f"skipped-{task}.csv")
        assert len(skipped) >= 1 and list(skipped.columns) == ["file_key", "reason"]
        assert f"task {task}: {len(skipped)} images skipped (" in capsys.readouterr().out


def test_readme_pretraining_mix_runs_on_radnet_and_chexpert(world, capsys):
    out, _ = world
    argv = ["pretrain", "--method", "simclr", "--data", "radnet", "--data", "chexpert", "--weights", "0.7,0.3",
            "--out", str(out / "runs" / "simclr-mix"), "--backbone", "resnet18", "--image-size", "32",
            "--batch-size", "4", "--max-steps", "1", "--workers", "0", "--accelerator", "cpu",
            "method.projection.hidden_dim=32", "method.projection.out_dim=16"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        "analyze cka --checkpoint runs/simclr-mix --checkpoint random --data organamnist --out figs",
        "analyze umap --checkpoint runs/simclr-mix --data radnet --data chexpert --data natural --out figs",
        "analyze domains --checkpoint runs/simclr-mix --data radnet --data chexpert --data natural --out figs",
    ],
)
def test_readme_analysis_commands_run_on_official_layouts(world, command, capsys):
    """After the pre-training test: its run folder is the README's ``runs/dino-radnet`` stand-in."""
    out, _ = world
    words = [str(out / w) if w.startswith(("runs/", "figs")) else w for w in command.split()]
    tiny = ["--backbone", "resnet18", "--image-size", "32", "--max-samples", "12", "--device", "cpu"]
    assert main([*words, *tiny]) == 0, capsys.readouterr().err


def test_no_output_byte_holds_a_patient_identifier(world):
    """Runs last in this module: everything the commands above wrote is searched."""
    out, fixtures = world
    identifiers = {i for f in fixtures for i in f.identifiers if len(i) >= 8 or not i.isdigit()}
    assert {"patient00001", "p10000032", "10000032", "00030001_000"} <= identifiers
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.parquet" for p in files) and any(p.suffix == ".npy" for p in files)
    assert any(p.name == "rejected.csv" for p in files) and any(p.name == "results.csv" for p in files)
    pattern = re.compile(b"|".join(re.escape(i.encode()) for i in sorted(identifiers, key=len, reverse=True)))
    for path in files:
        leaked = sorted({m.decode() for m in pattern.findall(path.read_bytes())})
        assert not leaked, f"{leaked[:5]} found in {path.relative_to(out)}"
