"""Typed configuration: pydantic v2 models with defaults in code, YAML presets, dotted ``--set`` overrides.

Precedence, lowest to highest: defaults in these models < YAML file < ``--set a.b=c`` overrides.
Unknown keys are errors with a close-match suggestion; values are coerced to the field type or rejected.
Every run writes its resolved config to ``<run_dir>/config.yaml``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from augkd.errors import ConfigError
from augkd.methods import METHOD_NAMES, get_method, module1_settings

CONFIG_VERSION = 1

METHODS = METHOD_NAMES  # every registered method (augkd.methods)


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSpec(_Base):
    """A network picked from the model registry (``augkd.models.list_models()``)."""

    arch: str = "mobilenet_v3_small"
    kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. {"width_mult": 0.5}


class DataConfig(_Base):
    """The labelled student-domain dataset and its split."""

    dataset: str = "mnist5k"  # built-in name (mnist5k, digits, fashion-mnist) or a folder / list file
    root: str | None = None  # image root for a list file (defaults to the list file's folder)
    image_size: int = Field(32, ge=8, le=512)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / eval / test fractions, stratified
    split_seed: int = 0  # kept apart from the training seed: every method and seed sees the same split
    shots_per_class: int | None = Field(None, ge=1)  # keep only K labelled training images per class
    max_per_class: int | None = Field(None, ge=1)  # cap on images per class before splitting (built-ins)
    skip_bad_files: bool = False  # skip and count unreadable images instead of failing
    augment: bool = True  # random crop (pad 4) on the training split
    hflip: bool = False  # horizontal flips (off by default: wrong for digits; on for Office photos)
    # the student's view of each real training image recoloured by a random two-colour map per channel, in every
    # method (as module3.gen_color does to G's images); the teacher, where used, labels the image as it is.
    # Off by default: wrong where colour is part of the label
    recolor: bool = False
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # the student's input normalisation (ImageNet)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @model_validator(mode="after")
    def _check_split(self) -> DataConfig:
        if any(f < 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6 or self.split[0] <= 0:
            raise ValueError(f"data.split must be three non-negative fractions summing to 1, got {self.split}")
        return self


class TeacherConfig(_Base):
    """The frozen teacher: a built-in pretrained model or a checkpoint written by ``augkd teacher``."""

    checkpoint: str = "ccexam-svhn"  # built-in name (ccexam-svhn, ...) or path to .safetensors / .pt


class GeneratorConfig(_Base):
    """Generator G and encoder E (Module 1)."""

    latent_dim: int = Field(100, ge=2)
    width: int = Field(256, ge=4)  # channels after the first linear layer (paper: 256); halves per stage
    encoder_width: int = Field(64, ge=4)  # first conv width of the encoder (paper: 64); doubles per stage


class Module1Config(_Base):
    """Data-free learning: G, E and S trained jointly from the teacher."""

    epochs: int = Field(200, ge=0)
    iters_per_epoch: int = Field(200, ge=1)
    batch_size: int = Field(256, ge=2)
    student_steps: int = Field(5, ge=1)  # k student/encoder steps per generator step
    # encoder steps per generator step (the first n of the k student steps also step E); None = k (official).
    # E only serves Modules 2 and 3; in bank mode its steps all use the generator step's own batch
    encoder_steps: int | None = Field(None, ge=1)
    g_lr: float = Field(1e-3, gt=0)
    s_lr: float = Field(1e-3, gt=0)
    s_wd: float = Field(1e-4, ge=0)
    e_lr: float = Field(1e-4, gt=0)
    w_adv: float = 1.0  # weight of -KL(T||S) in the generator loss
    w_ce: float = 1.0  # CE(T(x), argmax T(x))
    w_balance: float = 20.0  # class balance: w * sum p_bar log10 p_bar
    w_bn: float = 1.0  # BN-statistics matching
    kld_weight: float = 0.00025  # encoder VAE KL weight
    # --- synthesis options (docs/decisions.md, "Module 1"); the defaults are the official Module 1 ---
    # BN-statistics term: "concat" = one L2 norm over all layers' channels concatenated (official);
    # "layer_mean" = the mean over layers of each layer's ‖Δμ‖₂ + ‖Δσ²‖₂ (DeepInversion/Fast-DFKD scale:
    # it does not grow with the teacher's depth or width); "layer_sum" = the sum over layers (DeepInversion, DFQ,
    # CMI as published); "layer_rel" = per layer, the RMS over channels of the mean error in target standard
    # deviations plus that of the log variance ratio, mean over layers (augkd's: every layer weighs the same
    # whatever its activations' scale; BNStatsHook.loss)
    bn_form: Literal["concat", "layer_mean", "layer_sum", "layer_rel"] = "concat"
    # mask the adversarial term to the images where the teacher's and student's top-1 agree (Fast-DFKD):
    # the generator is not pushed towards images the teacher itself cannot classify
    adv_mask: bool = False
    jitter: int = Field(0, ge=0)  # random shift of up to ±jitter px of G's images before the teacher (DeepInversion)
    # memory bank: keep the last bank_size generated images (uint8) and train the student on batches drawn
    # from all of them (Fast-DFKD / CMI); 0 = the official fresh batch of G for every student step
    bank_size: int = Field(0, ge=0)
    # bank mode: each batch the student draws is augmented before the teacher labels it (the student learns the
    # teacher's function between and around the synthesised images): bank_mixup α > 0 blends each image with
    # another of the batch, λ ~ Beta(α, α); bank_rotate > 0 rotates by U(±bank_rotate)° and magnifies by
    # U(0.9, 1.1). 0 = off (official)
    bank_mixup: float = Field(0.0, ge=0)
    bank_rotate: float = Field(0.0, ge=0, le=180)
    kd_tau: float = Field(1.0, gt=0)  # temperature of the student's KL to the teacher in Module 1
    # image priors in the generator loss: the teacher's input statistics (its normalisation constants: mean
    # 0 and variance 1 after them) and total variation (DeepInversion); 0 = off (official)
    w_input: float = Field(0.0, ge=0)
    w_tv: float = Field(0.0, ge=0)
    # what the BN-statistics and input priors match: "teacher" = its running statistics and (0, 1) after its
    # normalisation (data-free, official); "student_domain" = the teacher's statistics on the unlabelled
    # student-domain training images (no label is used), so G is pulled towards the student's domain
    stats_target: Literal["teacher", "student_domain"] = "teacher"
    # DAFL's activation term: −w_act · mean |f_T(x)| of the teacher's penultimate features (the input of its
    # last Linear layer): the generator is pushed towards images that excite the teacher's features
    w_act: float = Field(0.0, ge=0)
    # CMI's contrastive diversity: InfoNCE in the teacher's penultimate feature space between two jittered
    # views of each generated image, with the batch's other images and a batch drawn from the bank as
    # negatives (needs bank_size > 0); contrast_tau is its temperature
    w_contrast: float = Field(0.0, ge=0)
    contrast_tau: float = Field(0.1, gt=0)
    # the epoch Module 1 keeps: "eval_acc1" = the student's Acc@1 on the eval split (labels); "fidelity" =
    # its top-1 agreement with the teacher on the eval images (no labels needed)
    select: Literal["eval_acc1", "fidelity"] = "eval_acc1"
    # the student's view of every synthesised image recoloured by a random two-colour map per channel while the
    # teacher labels the image as G drew it (as module3.gen_color): the student learns the teacher's function on
    # those shapes in any colours and either polarity. False = the same image for both (official)
    recolor: bool = False
    # Reuse the Module 1 result (student, generator, encoder) of another run directory with the same
    # teacher/student/data/generator/module1 settings and seed, instead of training it again. `augkd
    # compare` uses this so that every method built on Module 1 starts from the same one.
    init_from: str | None = None

    @model_validator(mode="after")
    def _check_contrast(self) -> Module1Config:
        if self.encoder_steps is not None and self.encoder_steps > self.student_steps:
            raise ValueError(
                f"module1.encoder_steps={self.encoder_steps} exceeds module1.student_steps="
                f"{self.student_steps}: the encoder steps are the first n of the k student steps"
            )
        if (self.bank_mixup > 0 or self.bank_rotate > 0) and self.bank_size == 0:
            raise ValueError(
                "module1.bank_mixup and module1.bank_rotate augment the batches drawn from the memory bank: "
                "set module1.bank_size > 0"
            )
        if self.w_contrast > 0 and self.bank_size == 0:
            raise ValueError(
                "module1.w_contrast > 0 draws its negatives from the memory bank: set module1.bank_size > 0"
            )
        return self


class Module2Config(_Base):
    """Anchor learning: only the AnchorNet is trained."""

    epochs: int = Field(200, ge=0)
    lr: float = Field(1e-3, gt=0)
    invariant: float = Field(0.25, ge=0, le=1)  # alpha: target fraction of latent dims kept invariant
    mask_form: Literal["per_sample", "batch_total"] = "per_sample"  # batch_total = official code (B2)
    w_mask: float = 1.0
    w_ce: float = 0.1
    tau: float = Field(1.0, gt=0)  # energy temperature
    # z = E(x, y) in the training batches: "mean" = mu; "sample" = a fresh draw z ~ q(z|x, y) per batch
    # (docs/decisions.md B13: the encoder samples only while training). Validation and pictures use mu.
    encoder_z: Literal["mean", "sample"] = "mean"
    # Sample-specific anchors (docs/decisions.md, "Anchors of real images"). w_encoder 0 = the paper and the
    # official code: E is frozen here and was only ever trained on generated images, so G(E(x)) of a real x
    # is one pattern per class. > 0: E is trained here too, on the real images, aiming at G(E(x)) as a
    # teacher-domain view of x (measured: a view of the class the teacher gives x, not of x itself;
    # benchmarks/probe_anchor_source.py): the teacher's penultimate features of G(E(x)) close to those of x
    # (1 − cosine) and its top-1 = y (CE), both times w_encoder, while E stays the inverse of G on G's own
    # images (Module 1's encoder loss on a fresh generated batch, per latent dimension).
    w_encoder: float = Field(0.0, ge=0)
    e_lr: float = Field(1e-4, gt=0)  # the encoder's Adam lr when w_encoder > 0 (Module 1's default)
    w_near: float = Field(0.0, ge=0)  # w·mean((z_a − z)²) added to L_A: keeps each anchor near its own z
    # with w_encoder > 0: w_instance·InfoNCE between the teacher's penultimate features of G(E(x_i)) and of the
    # batch's real images, x_i the positive (temperature instance_tau): G(E(x)) a view of x itself, not of its
    # class (the cosine term alone is met by one view per class: benchmarks/probe_anchor_source.py). 0 = off
    w_instance: float = Field(0.0, ge=0)
    instance_tau: float = Field(0.1, gt=0)
    # w·InfoNCE between the teacher's features of each anchor image G(A(E(x_i))) and of the batch's real images,
    # x_i the positive, added to L_A: the anchor stays a view of x itself (the energy term alone pulls every
    # anchor of a class to one confident image). Works with or without w_encoder. 0 = off (the paper)
    # With it on, the eval anchor loss that picks Module 2's epoch includes the term too (its InfoNCE has the eval
    # batch's images as negatives, so its scale moves with train.eval_batch_size).
    w_anchor_instance: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check_instance(self) -> Module2Config:
        if self.w_instance > 0 and self.w_encoder == 0:
            raise ValueError(
                "module2.w_instance acts on the encoder's Module 2 training, which module2.w_encoder=0 turns off: "
                "set module2.w_encoder > 0 or use module2.w_anchor_instance"
            )
        return self


class Module3Config(_Base):
    """Mixup learning: the student learns from anchor/real mixtures and the teacher."""

    epochs: int = Field(200, ge=0)
    lr: float = Field(1e-3, gt=0)
    wd: float = Field(1e-4, ge=0)
    a: float = Field(0.6, gt=0)  # fraction of training over which s ramps to 1
    b: float = Field(0.2, ge=0, le=1)  # starting s
    schedule: Literal["linear", "step"] = "linear"
    # the student's learning rate: "constant" = official (ConstantLR: lr/3 for 5 steps, then lr);
    # "cosine" = the same warm-up, then cosine annealing over the epochs, as the scratch/kd baselines
    lr_schedule: Literal["constant", "cosine"] = "constant"
    u: float = Field(0.5, ge=0, le=1)  # weight of CE; (1-u) weights tau^2 KL
    tau: float = Field(10.0, gt=0)
    kd_target: Literal["teacher", "student"] = "teacher"  # student = official code (B1)
    normalize_real: bool = True  # False = official code's raw real half (B3)
    mixed_only: bool = False  # train on the mixed half only (no separate real half)
    encoder_z: Literal["mean", "sample"] = "mean"  # as module2.encoder_z, for the mixup batches
    # Teacher-domain rehearsal (docs/decisions.md, "Module 3 rehearsal"): each step also distils the teacher on
    # gen_batch fresh images (per device; each rank draws its own latents) of the frozen G (random latents, no
    # label), w_gen·τ²·KL(T ‖ S) added to the loss,
    # so the student keeps the teacher's function on its own domain while it fits the few real images.
    # 0 = the paper (off)
    w_gen: float = Field(0.0, ge=0)
    gen_batch: int = Field(128, ge=1)
    # the rehearsal images blend each G image with a random real training image of the step's batch:
    # (1 − λ)·G(z) + λ·x, λ ~ U(0, gen_mix) per image, still labelled by the teacher alone; 0 = G's images only
    gen_mix: float = Field(0.0, ge=0, le=1)
    # the student's view of each rehearsal image recolours G's image with a random two-colour map
    # c0 + g·(c1 − c0), c0, c1 ~ U[0, 1]³ per image (either polarity, any colours); the teacher labels the
    # image G drew, so its label carries over to the recoloured shape. False = the same image for both
    gen_color: bool = False
    # recolour G's part of the anchor mixtures in the student's view the same way (the teacher sees them as drawn)
    mix_color: bool = False
    # the rehearsal forward updates the student's BatchNorm running statistics (eval mode's) with G's images;
    # False: they come from the real (and mixup) batch alone, the images eval and deployment see
    gen_bn_stats: bool = True


class KDConfig(_Base):
    """Plain KD / fine-tuning on real student-domain images (``scratch``, ``kd``, ``dfkd-ft``)."""

    epochs: int = Field(50, ge=0)
    lr: float = Field(1e-3, gt=0)
    wd: float = Field(1e-4, ge=0)
    u: float = Field(0.5, ge=0, le=1)  # 1.0 = CE only
    tau: float = Field(4.0, gt=0)


class TrainConfig(_Base):
    """Settings shared by every stage."""

    seed: int = 0
    batch_size: int = Field(256, ge=1)  # real-image batch in Modules 2 and 3 and the baselines
    eval_batch_size: int = Field(1024, ge=1)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA and on CPUs with AVX-512 BF16
    channels_last: bool = True
    # networks that run in fp32 even under bf16 autocast: a small MobileNet student on a CPU is 3× faster in
    # fp32 (depthwise convolutions and casts dominate; 111 vs 267 ms per step, benchmarks/bench_precision.py)
    fp32_nets: list[Literal["student", "generator", "encoder", "anchor", "teacher"]] = []
    threads: int | None = Field(None, ge=1)  # torch.set_num_threads; None = torch's default
    # keep: on CPU runs, glibc keeps freed blocks for reuse instead of unmapping them (no page faults on every
    # step's big activations; the process keeps its peak memory; augkd.utils.keep_freed_memory); system: not
    # applied (the C library's defaults, unless an earlier run in the same process applied it)
    malloc: Literal["keep", "system"] = "keep"
    save_images: bool = True
    progress: bool = True


class KernelConfig(_Base):
    """Which implementation of the fused ops to use (auto, triton, torch, compile)."""

    backend: Literal["auto", "triton", "torch", "compile"] = "auto"


class DistillConfig(_Base):
    """Everything ``augkd distill`` needs."""

    version: int = CONFIG_VERSION
    method: str = "augkd"  # a name of augkd.methods.METHODS (augkd methods lists them)
    teacher: TeacherConfig = TeacherConfig()
    student: ModelSpec = ModelSpec(arch="mobilenet_v3_small", kwargs={"width_mult": 0.5, "bn_momentum": 0.1})
    data: DataConfig = DataConfig()
    generator: GeneratorConfig = GeneratorConfig()
    module1: Module1Config = Module1Config()
    module2: Module2Config = Module2Config()
    module3: Module3Config = Module3Config()
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig()
    kernels: KernelConfig = KernelConfig()

    @model_validator(mode="before")
    @classmethod
    def _apply_method(cls, data: Any) -> Any:
        """Check the method name and apply the Module 1 settings a data-free baseline fixes (augkd.methods)."""
        if not isinstance(data, dict):
            return data
        method = get_method(str(data.get("method", "augkd")))
        if not method.module1:
            return data
        m1 = data.get("module1", {})
        raw = m1.model_dump() if isinstance(m1, BaseModel) else dict(m1 or {})
        default_batch = Module1Config.model_fields["batch_size"].default
        return {**data, "module1": module1_settings(method, raw, default_batch)}

    @model_validator(mode="after")
    def _check_version(self) -> DistillConfig:
        if self.version != CONFIG_VERSION:
            raise ValueError(f"config version {self.version} is not supported (this augkd reads {CONFIG_VERSION})")
        # a distillation run selects on the eval split and reports on the test split: neither may be empty
        empty = [name for name, f in zip(("train", "eval", "test"), self.data.split, strict=True) if f <= 0]
        if empty:
            raise ValueError(
                f"data.split={list(self.data.split)} leaves the {' and '.join(empty)} split empty: distill needs "
                "train, eval and test fractions > 0, e.g. --set data.split=[0.8,0.1,0.1]"
            )
        return self


class TeacherTrainConfig(_Base):
    """Everything ``augkd teacher`` needs: train a teacher on a teacher-domain dataset."""

    version: int = CONFIG_VERSION
    model: ModelSpec = ModelSpec(arch="resnet18")
    data: DataConfig = DataConfig(split=(0.8, 0.2, 0.0))
    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0)
    wd: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    train: TrainConfig = TrainConfig()


C = TypeVar("C", bound=BaseModel)


def _fields_of(model: type[BaseModel], path: list[str]) -> tuple[type[BaseModel] | None, list[str]]:
    """Walk ``path`` down nested models; returns the innermost model and its field names."""
    cur: type[BaseModel] | None = model
    for key in path:
        if cur is None:
            return None, []
        ann = cur.model_fields[key].annotation
        cur = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return cur, list(cur.model_fields) if cur is not None else []


def _check_keys(model: type[BaseModel], data: dict[str, Any], prefix: list[str]) -> None:
    """Raise ConfigError for unknown keys, suggesting the closest valid one."""
    cls, names = _fields_of(model, prefix)
    if cls is None:
        return
    for key, value in data.items():
        if key not in names:
            full = ".".join([*prefix, key])
            close = difflib.get_close_matches(key, names, n=1)
            hint = (
                f"; did you mean {'.'.join([*prefix, close[0]])!r}?" if close else f"; valid keys: {', '.join(names)}"
            )
            raise ConfigError(f"unknown config key {full!r}{hint}")
        sub, _ = _fields_of(model, [*prefix, key])
        if sub is not None and isinstance(value, dict) and key != "kwargs":
            _check_keys(model, value, [*prefix, key])


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=c`` into (["a", "b"], value); the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}: expected KEY=VALUE, e.g. --set module3.epochs=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {text!r}: empty key; expected e.g. --set train.seed=1")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad override {text!r}: value is not valid YAML ({exc.__class__.__name__})") from exc
    return key.split("."), value


def overrides_to_dict(overrides: list[str]) -> dict[str, Any]:
    """Turn repeated ``--set a.b=c`` strings into one nested dict."""
    out: dict[str, Any] = {}
    for text in overrides:
        path, value = parse_override(text)
        cur = out
        for part in path[:-1]:
            nxt = cur.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r} conflicts with an earlier override of {part!r}")
            cur = nxt
        cur[path[-1]] = value
    return out


def _format_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across several fields: its message names them
        return f"invalid config: {msg}"
    given = err.get("input")
    given_s = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"invalid config value for {loc}: {msg}{given_s}"


def build_config(model: type[C], data: dict[str, Any] | None = None, overrides: list[str] | None = None) -> C:
    """Validate ``data`` (+ overrides) against ``model``; errors become one-line ConfigErrors."""
    merged = _deep_merge(data or {}, overrides_to_dict(overrides or []))
    _check_keys(model, merged, [])
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from exc


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {str(path)!r}; pass an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = str(exc.problem or exc.__class__.__name__)
        if exc.context:
            ctx = exc.context_mark
            started = (
                f" started at line {ctx.line + 1}"
                if ctx is not None and mark is not None and ctx.line != mark.line
                else ""
            )
            what += f" ({exc.context}{started})"
        raise ConfigError(f"config file is not valid YAML: {where}: {what}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}".splitlines()[0]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    model: type[C] = DistillConfig,  # type: ignore[assignment]
) -> C:
    """Load a config: defaults < YAML file ``path`` < ``overrides`` (``["a.b=c", ...]``)."""
    data = read_yaml(path) if path is not None else {}
    return build_config(model, data, overrides)


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """A plain dict (tuples as lists) ready for YAML/JSON."""
    return cfg.model_dump(mode="json")


def dump_config(cfg: BaseModel) -> str:
    """YAML text of a resolved config (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: BaseModel, path: str | Path) -> Path:
    """Atomically write the resolved config as YAML."""
    from augkd.utils import atomic_write_text

    return atomic_write_text(path, dump_config(cfg))
