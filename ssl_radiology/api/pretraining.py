"""One pre-training run from a :class:`~ssl_radiology.api.types.PretrainRequest`.

Settings are composed from ``configs/method/<method>.yaml`` (under ``method``),
``configs/train/default.yaml`` (under ``train``) and, when ``--backbone`` names one,
``configs/model/<name>.yaml`` (under ``model``; it sets the method's backbone and drop-path rate), then the
request's fields, then its dotted overrides
(``method.head.out_dim=4096``, ``train.keep_checkpoints=5``); the resolved tree is saved as
``RUN_DIR/config.yaml``. Every setting and every data source is checked before a model is built or data is
read, so a mistake costs no time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_radiology import checks
from ssl_radiology.api.types import PretrainRequest, PretrainResult
from ssl_radiology.config import available, compose, save
from ssl_radiology.errors import UserError

#: ``train`` keys that are whole numbers, with their minimum (``None`` allowed where the YAML default is null)
TRAIN_INTEGERS = {
    "max_steps": 1,
    "max_epochs": 1,
    "stop_at_step": 1,
    "devices": 1,
    "num_nodes": 1,
    "checkpoint_every": 1,
    "accumulate": 1,
    "keep_checkpoints": 1,
    "log_every": 1,
    "workers": 0,
    "epoch_length": 1,
}


def compose_settings(request: PretrainRequest) -> DictConfig:
    """Compose method + train defaults + request fields + overrides into one checked config."""
    request.check()
    method_fields = {"backbone": request.backbone, "image_size": request.image_size}
    method_fields["batch_size"] = request.batch_size
    train_fields = {
        "data": list(request.data),
        "weights": list(request.weights) if request.weights else None,
        "fraction": request.fraction,
        "max_steps": request.max_steps,
        "max_epochs": request.max_epochs,
        "devices": request.devices,
        "num_nodes": request.num_nodes,
        "accelerator": request.accelerator,
        "precision": request.precision,
        "workers": request.workers,
        "checkpoint_every": request.checkpoint_every,
        "init": request.init,
        "export_heads": request.export_heads or None,
    }
    groups = {"method": request.method, "train": "default"}
    if request.backbone in available("model"):  # a configs/model/ name: its timm model and drop-path rate
        groups["model"] = request.backbone
        method_fields.update(backbone="${model.name}", drop_path="${model.drop_path_rate}")
    base = {
        "method": {"seed": request.seed, **{k: v for k, v in method_fields.items() if v is not None}},
        "train": {k: v for k, v in train_fields.items() if v is not None},
    }
    cfg = compose(groups, request.overrides, base=base)
    check_train(cfg)
    return cfg


def check_train(cfg: DictConfig) -> None:
    """Types and ranges of the ``train`` settings and the batch size, before any work."""
    train, method = cfg.train, cfg.method
    for key, minimum in TRAIN_INTEGERS.items():
        if train[key] is not None:
            checks.integer(train[key], f"train.{key}", minimum)
    checks.fraction(train.fraction, "train.fraction")
    from ssl_radiology.training.data import CROP_MODES  # checked here, before any source is opened

    if train.crops not in CROP_MODES:
        raise UserError(f"train.crops must be one of {', '.join(CROP_MODES)}, got {train.crops!r}")
    if train.max_steps is not None and train.max_epochs is not None:
        raise UserError("train.max_steps and train.max_epochs are exclusive; give one")
    if train.max_steps is None and train.max_epochs is None:
        raise UserError("give --max-steps or --max-epochs (in an experiment: args: {max-steps: N})")
    minimum = 2 if method.name == "simclr" else 1
    if checks.integer(method.batch_size, "method.batch_size") < minimum:
        raise UserError(f"--batch-size must be ≥ {minimum} for {method.name}, got {method.batch_size}")
    if train.weights is not None and len(train.weights) != len(train.data):
        raise UserError(f"--weights: {len(train.weights)} weights for {len(train.data)} --data sources")


def resume_checkpoint(run_dir: Path, cfg: DictConfig, resume: bool) -> Path | None:
    """``last.ckpt`` to continue from, after checking that the run's settings did not change."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    if not resume:
        raise UserError(
            f"{run_dir} already holds a run ({last}); pass --resume to continue it or choose another --out"
        )
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = OmegaConf.load(saved_path)
        changed = [
            k for k in sorted(set(saved.method) | set(cfg.method)) if saved.method.get(k) != cfg.method.get(k)
        ]
        same_data = list(saved.train.data) == list(cfg.train.data)
        old_fraction = saved.train.get("fraction", 1.0)  # runs saved before train.fraction existed
        if changed or not same_data or old_fraction != cfg.train.fraction:
            what = ", ".join(f"method.{k}" for k in changed) or "train.data / train.fraction"
            raise UserError(
                f"--resume: settings differ from {saved_path} ({what}); resume with the same settings"
            )
    return last


def open_sources(train: dict[str, Any], seed: int) -> list:
    """The training datasets: each ``--data`` source, cut to ``train.fraction`` of its patients."""
    from ssl_radiology.data import open_source
    from ssl_radiology.data.subsets import patient_fraction

    return [patient_fraction(open_source(src), float(train["fraction"]), seed) for src in train["data"]]


def run_pretrain(request: PretrainRequest) -> PretrainResult:
    cfg = compose_settings(request)
    run_dir = Path(request.out or Path("runs") / f"pretrain-{cfg.method.name}").resolve()
    ckpt = resume_checkpoint(run_dir, cfg, request.resume)

    import lightning as L

    from ssl_radiology.methods import create_method, method_class, validate, view_settings
    from ssl_radiology.models.backbones import patch_size_of
    from ssl_radiology.training.data import PretrainData
    from ssl_radiology.training.trainer import build_trainer, check_hardware, check_loggers

    settings: dict[str, Any] = OmegaConf.to_container(cfg.method, resolve=True)  # type: ignore[assignment]
    train: dict[str, Any] = OmegaConf.to_container(cfg.train, resolve=True)  # type: ignore[assignment]
    L.seed_everything(int(request.seed), workers=True, verbose=False)
    check_loggers(list(train["loggers"]))
    validate(settings)  # typed method settings, before any data is opened or prepared
    from ssl_radiology.training.init import apply_init, check_init, init_callbacks

    check_init(train)
    check_hardware(str(train["accelerator"]), train["precision"], int(train["devices"]))
    # an unknown --data fails before the model is built; a method may bring its own data (supervised)
    sources = method_class(settings["name"]).training_sources(settings, train, int(request.seed))
    if sources is None:
        sources = open_sources(train, int(request.seed))
    module = create_method(settings["name"], settings)
    if train["init"] is not None and ckpt is None:  # a resumed run restores its own (continued) weights
        apply_init(module, str(train["init"]), channels=str(train["init_channels"]))
    data = PretrainData(
        sources,
        view_settings(settings, patch_size_of(settings["backbone"])),
        batch_size=int(settings["batch_size"]),
        workers=int(train["workers"]),
        seed=int(request.seed),
        weights=train["weights"],
        epoch_length=train["epoch_length"],
        names=train["data"],
        crops=str(train["crops"]),
    )
    trainer = build_trainer(
        run_dir,
        max_steps=int(train["stop_at_step"] or train["max_steps"] or -1),
        max_epochs=train["max_epochs"],
        devices=int(train["devices"]),
        num_nodes=int(train["num_nodes"]),
        accelerator=str(train["accelerator"]),
        precision=train["precision"],
        checkpoint_every=int(train["checkpoint_every"]),
        keep_checkpoints=int(train["keep_checkpoints"]),
        clip_grad=settings.get("clip_grad"),
        accumulate=int(train["accumulate"]),
        log_every=int(train["log_every"]),
        debug_seen=bool(train["debug_seen"]),
        collapse_guard=train["collapse_guard"],
        loggers=list(train["loggers"]),
    )
    trainer.callbacks.extend(init_callbacks(train, run_dir))  # head warm-up, method export
    module.schedule_steps = train["max_steps"]  # type: ignore[assignment]
    if trainer.is_global_zero:
        save(cfg, run_dir)
        for stale in (run_dir / "checkpoints").glob("*.tmp-*"):  # left by a save that was killed
            stale.unlink()
    trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if trainer.is_global_zero:
        print(
            f"pre-trained {settings['name']} ({settings['backbone']}) for {trainer.global_step} steps → {run_dir}"
        )
    return PretrainResult(run_dir, str(settings["name"]), str(settings["backbone"]), int(trainer.global_step))
