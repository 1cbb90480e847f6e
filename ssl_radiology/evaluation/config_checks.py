"""Typed checks of the evaluation configs (``configs/eval/*.yaml`` + overrides), before any work.

``ks=[-1]``, ``batch_size=abc`` or ``window=[40]`` used to surface as tracebacks deep in faiss or a
DataLoader; here each value is checked against its rule (the rule types of :mod:`ssl_radiology.methods
.settings`) and refused with one line naming the key. Unknown keys are already refused by
``config.apply_overrides``. Protocol modules may add rules for their own sections to ``RULES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssl_radiology.methods.settings import Float, Int, OneOf, Rule, Text, lookup


@dataclass(frozen=True, kw_only=True)
class ListOf(Rule):
    """A non-empty list whose items all satisfy ``item``."""

    item: Rule

    def describe(self) -> str:
        return f"a non-empty list, each {self.item.describe()}"

    def valid(self, value: Any) -> bool:
        return isinstance(value, list | tuple) and bool(value) and all(self.item.valid(v) for v in value)


@dataclass(frozen=True, kw_only=True)
class Window(Rule):
    """A CT window ``[centre, width]`` in HU with a positive width."""

    def describe(self) -> str:
        return "a window [centre, width] in HU with width > 0"

    def valid(self, value: Any) -> bool:
        number = Float()
        return (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(number.valid(v) for v in value)
            and value[1] > 0
        )


COMMON: dict[str, Rule] = {
    "image_size": Int(low=1),
    "window": Window(),
    "batch_size": Int(low=1),
    "workers": Int(low=0),
    "val_fraction": Float(low=0.0, high=1.0, low_open=True, high_open=True),
    "bootstrap": Int(low=0),
    "ood.site": Text(),
}
#: rules per eval config (``configs/eval/<name>.yaml``)
RULES: dict[str, dict[str, Rule]] = {
    "knn": {
        **COMMON,
        "ks": ListOf(item=Int(low=1)),
        "temperature": Float(low=0.0, low_open=True),
        "threads": Int(low=1, optional=True),
    },
    "linear": {
        **COMMON,
        "head": OneOf("sgd", "logreg", "both"),
        "sgd.base_lrs": ListOf(item=Float(low=0.0, low_open=True)),
        "sgd.epochs": Int(low=1),
        "sgd.batch_size": Int(low=1),
        "logreg.cs": ListOf(item=Float(low=0.0, low_open=True)),
    },
    "finetune": {
        **COMMON,
        "finetune.min_steps": Int(low=1),
        "finetune.epochs": Int(low=0),
        "finetune.base_lrs": ListOf(item=Float(low=0.0, low_open=True)),
        "finetune.evals": Int(low=1),
        "finetune.patience": Int(low=1),
        "finetune.warmup_fraction": Float(low=0.0, high=1.0, high_open=True),
        "finetune.weight_decay": Float(low=0.0),
        "finetune.layer_decay": Float(low=0.0, high=1.0, low_open=True),
        "finetune.drop_path": Float(low=0.0, high=1.0, high_open=True),
        "finetune.label_smoothing": Float(low=0.0, high=1.0, high_open=True),
        "finetune.head_init_std": Float(low=0.0),
    },
}


def check_eval_config(name: str, settings: Mapping[str, Any]) -> None:
    """Raise one ``UserError`` for the first value of eval config ``name`` that breaks its rule."""
    for key, rule in RULES.get(name, COMMON).items():
        rule.check(key, lookup(settings, key))
