"""The method registry: every method augkd can run, declared once.

A method is a list of stages of the one engine (``augkd.training.stages.build_stages`` turns the names
into stage objects) plus, for the data-free baselines, the Module 1 settings that make the synthesiser
that method. Config validation, ``build_stages``, the CLI help, ``augkd compare`` and ``augkd methods``
all read this table (docs/decisions.md, "Methods").

Stage names: ``module1`` (data-free G/E/S), ``module2`` (anchors), ``module3`` (mixup; ``module3-no-anchor``
with z_a = z, ``module3-no-mixup`` with s = 1 throughout), ``scratch`` (CE on the labelled split), ``kd``
(teacher KD on the labelled split) and ``finetune`` (``kd`` after Module 1: the paper's "+" rows).

A baseline's ``module1`` settings override the config's: they define the method (its loss weights and
synthesis options), so ``-m dfq`` on a preset tuned for AuG-KD still runs DFQ. The budget (epochs,
iterations, batch size, learning rates, generator width, bank size) stays the config's, so every method
of one ``augkd compare`` gets the same one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STAGES = ("module1", "module2", "module3", "module3-no-anchor", "module3-no-mixup", "scratch", "kd", "finetune")


@dataclass(frozen=True)
class Method:
    name: str
    stages: tuple[str, ...]
    help: str
    module1: Mapping[str, Any] = field(default_factory=dict)  # Module 1 settings this method fixes
    bank: bool = False  # the synthesis keeps a memory bank (a config bank_size of 0 becomes 50 batches)

    @property
    def uses_module1(self) -> bool:
        """Whether the method runs Module 1, and so builds G, E and the AnchorNet."""
        return "module1" in self.stages


# Module 1 settings every data-free baseline sets, so that none inherits AuG-KD's own synthesis options
_PLAIN = {"adv_mask": False, "jitter": 0, "w_input": 0.0, "w_tv": 0.0, "w_act": 0.0, "w_contrast": 0.0, "kd_tau": 1.0}

# The data-free baselines of the paper's table, re-implemented from their papers on the one synthesiser
# (G trained jointly with the student); docs/decisions.md says where each departs from its paper.
_BASELINES: dict[str, tuple[str, dict[str, Any], bool]] = {
    # Yin et al. 2020: class CE + BN statistics (weight 10, per-layer sum) + TV prior, jitter before T; no
    # adversarial term (plain DeepInversion). G replaces per-batch pixel optimisation; CE to T's argmax.
    "deepinversion": (
        "DeepInversion (Yin et al. 2020)",
        {"w_adv": 0.0, "w_ce": 1.0, "w_balance": 0.0, "w_bn": 10.0, "bn_form": "layer_sum", "w_tv": 1e-3, "jitter": 2},
        False,
    ),
    # Choi et al. 2020: BN statistics + one-hot CE + class balance (20) + adversarial KL
    "dfq": (
        "DFQ (Choi et al. 2020)",
        {"w_adv": 1.0, "w_ce": 1.0, "w_balance": 20.0, "w_bn": 1.0, "bn_form": "layer_sum"},
        False,
    ),
    # Fang et al. 2021: BN + one-hot 0.5 + adversarial 0.5 + contrastive instance discrimination 0.8 against
    # a memory bank the student trains on
    "cmi": (
        "CMI (Fang et al. 2021), with a memory bank",
        {
            "w_adv": 0.5,
            "w_ce": 0.5,
            "w_balance": 0.0,
            "w_bn": 1.0,
            "bn_form": "layer_sum",
            "w_contrast": 0.8,
            "contrast_tau": 0.1,
            "jitter": 2,
        },
        True,
    ),
    # Micaelli & Storkey 2019: adversarial KL only, 10 student steps per generator step
    "zskt": (
        "ZSKT (Micaelli & Storkey 2019)",
        {"w_adv": 1.0, "w_ce": 0.0, "w_balance": 0.0, "w_bn": 0.0, "student_steps": 10},
        False,
    ),
    # Chen et al. 2019: one-hot CE + activation (0.1) + information entropy (5), no adversarial term
    "dafl": (
        "DAFL (Chen et al. 2019)",
        {"w_adv": 0.0, "w_ce": 1.0, "w_balance": 5.0, "w_bn": 0.0, "w_act": 0.1},
        False,
    ),
}


def _registry() -> dict[str, Method]:
    methods = [
        Method("augkd", ("module1", "module2", "module3"), "AuG-KD: data-free Module 1, anchors, mixup (default)"),
        Method("scratch", ("scratch",), "the student trained with CE on the labelled split only"),
        Method("kd", ("kd",), "teacher KD on the labelled student-domain images"),
        Method("dfkd", ("module1",), "AuG-KD's Module 1 alone: the data-free student, as is"),
        Method("dfkd-ft", ("module1", "finetune"), "AuG-KD's Module 1, then KD fine-tuning on the labelled split"),
        Method("augkd-no-anchor", ("module1", "module3-no-anchor"), "ablation: no Module 2 (z_a = z)"),
        Method("augkd-no-mixup", ("module1", "module3-no-mixup"), "ablation: Module 3 with s = 1 (no mixup)"),
        Method(
            "augkd-no-anchornet",
            ("module1", "module2", "module3-no-anchor"),
            "ablation: Module 2 runs (E learns the real images when module2.w_encoder > 0), Module 3 mixes G(E(x))",
        ),
    ]
    for name, (text, m1, bank) in _BASELINES.items():
        methods.append(Method(name, ("module1",), f"{text}: data-free", m1, bank))
        methods.append(Method(f"{name}-ft", ("module1", "finetune"), f"{text}, then KD fine-tuning", m1, bank))
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _registry()
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name is a ValueError naming the closest one."""
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METHOD_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown method {name!r}{hint} (augkd methods lists them: {', '.join(METHOD_NAMES)})"
        ) from None


def module1_settings(method: Method, module1: Mapping[str, Any], default_batch: int) -> dict[str, Any]:
    """``module1`` (a raw config mapping) with the settings ``method`` fixes applied (``default_batch``: the
    batch size when ``module1`` does not set one)."""
    if not method.module1:
        return dict(module1)
    out = {**module1, **_PLAIN, **method.module1}
    if method.bank and not out.get("bank_size"):
        out["bank_size"] = 50 * int(out.get("batch_size", default_batch))
    if not method.bank:
        out["bank_size"] = 0
    return out


def methods_help() -> str:
    """One line: the method names, for CLI option help."""
    return ", ".join(METHOD_NAMES) + " (augkd methods describes each)."
