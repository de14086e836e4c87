"""The training loop: AdamW, warm-up + decay, clipping, bf16 on CUDA, exact resume.

A checkpoint holds everything that decides what happens next (model, optimiser, scheduler,
step, data position, RNG state), so a run killed at any point and restarted with the same
command continues to the same parameters an uninterrupted run reaches.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import load_config, save_config
from ..data.pipeline import DataConfig, Featurizer, make_loader
from ..decode import greedy_decode
from ..features import FeatureConfig
from ..models.heads import CTCHead
from ..models.model import ASTModel, ModelConfig
from ..tokenizer import load_tokenizer

log = logging.getLogger("astctc.train")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 500
    schedule: str = "cosine"  # cosine | linear | constant (after warm-up)
    final_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    layer_decay: float = 1.0  # < 1: block i of L gets lr*d^(L-i), embeddings lr*d^(L+1), heads lr
    freeze_encoder_steps: int = 0  # encoder gets no gradient (is not stepped) for the first N steps
    fused: bool = True  # torch's fused AdamW kernel: one pass over all tensors (CPU: 10 -> 2 ms a step
                        # for the mini model, whose step is ~100-200 ms); false: the per-tensor loop


@dataclass
class TrainConfig:
    exp_dir: str = "exp/run"
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: str | None = None  # pretrained weights: hf://<repo id> or a directory (models/pretrained.py)
    init_kernel_resize: str = "pi"  # patch kernel of another size: pi (FlexiViT PI-resize) | bilinear
    loss_weights: dict[str, float] = field(default_factory=dict)  # {"ctc" | head name: weight}, default 1
    max_steps: int = 10000
    max_epochs: int | None = None
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at every epoch end
    keep_checkpoints: int = 10
    log_every: int = 20
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 on CUDA, fp32 on CPU | amx: bf16 on CUDA and on CPUs with AMX, else fp32 | bf16 | fp32
    precision: str = "auto"
    grad_accum: int = 1  # batches per process per optimiser step (loss normalised over all of them)
    compile: bool = False  # torch.compile the encoder; the first step's time (compilation) is logged
    validate: bool = True  # validation loss and greedy WER at each epoch end
    progress: bool = True


def lr_lambda(cfg: OptimConfig, max_steps: int):
    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
        floor = cfg.final_lr_ratio
        if cfg.schedule == "linear":
            return floor + (1 - floor) * (1 - frac)
        if cfg.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
        raise ValueError(f"unknown schedule {cfg.schedule!r}")

    return fn


def param_groups(model: ASTModel, cfg: OptimConfig) -> list[dict]:
    """AdamW groups: weight decay on weight matrices outside the embeddings; with layer_decay < 1,
    one group per depth with lr scaled by layer_decay^(L+1-depth) (BEiT/AST fine-tuning): depth 0
    = embeddings, i+1 = block i, L+1 = final LayerNorm and heads. Head groups come first, so the
    first group's lr (the one logged) is the base lr."""
    L = model.cfg.encoder.depth
    if not 0 < cfg.layer_decay <= 1:
        raise ValueError(f"optim.layer_decay must be in (0, 1], not {cfg.layer_decay}")

    def depth(name: str) -> int:
        if cfg.layer_decay == 1.0 or not name.startswith("encoder."):
            return L + 1
        if name.startswith("encoder.embeddings."):
            return 0
        m = re.match(r"encoder\.encoder\.layer\.(\d+)\.", name)
        return int(m[1]) + 1 if m else L + 1

    groups: dict[tuple[int, bool], dict] = {}
    for n, p in model.named_parameters():
        decay = p.ndim >= 2 and "embeddings" not in n
        d = depth(n)
        g = groups.setdefault((d, decay), {"params": [], "weight_decay": cfg.weight_decay if decay else 0.0,
                                           "lr": cfg.lr * cfg.layer_decay ** (L + 1 - d)})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1]))]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_amx() -> bool:
    """AMX tiles: where a CPU's bf16 matrix products beat fp32. AVX512-BF16 alone does not:
    on a 2-core Xeon without AMX, bf16 matmuls ran at half fp32's speed and FSDD's training
    stage took 291 s against 167 s. (On an earlier machine, whose flags went unrecorded but
    which was most likely an AMX one, bf16 was 15% faster.)"""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def use_bf16(device: torch.device, precision: str) -> bool:
    if precision in ("bf16", "fp32"):
        return precision == "bf16"
    return device.type == "cuda" or (precision == "amx" and device.type == "cpu" and cpu_has_amx())


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16(device, precision))


# ---- distributed ----------------------------------------------------------------------


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) join the process group:
    NCCL on CUDA, each process on the GPU of its LOCAL_RANK; gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (or min) of a few numbers over all ranks (float64 on the collective's device)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return t.tolist()


def _batch_weight(batch: dict) -> float:
    """A batch's share of a step's loss: its CTC target tokens, or its utterances without them."""
    n = int(batch["target_lengths"].sum()) if "target_lengths" in batch else 0
    return float(n if n > 0 else len(batch["ids"]))


def _step_seed(seed: int, rank: int, step: int) -> int:
    """Per-rank RNG seed of a DDP step: ranks draw different dropout masks, and a resumed run
    (on any number of ranks) draws what an uninterrupted one would at that step and rank."""
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)


class _NullWriter:
    """TensorBoard writer of the ranks other than 0: only rank 0 writes logs."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


# ---- checkpoints ----------------------------------------------------------------------


def checkpoints(exp_dir: str | Path) -> list[Path]:
    """Training checkpoints of a run, oldest first."""
    return sorted((Path(exp_dir) / "ckpt").glob("step-*.pt"))


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _np_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _np_state() -> tuple:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot load checkpoint ({e})") from None


# ---- the loop -------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.exp = Path(cfg.exp_dir)
        self.device = resolve_device(cfg.device)
        self._owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (
            torch.distributed.is_available() and torch.distributed.is_initialized())
        self.rank, self.world, self.device = init_distributed(self.device)
        if cfg.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, not {cfg.grad_accum}")
        self.tokenizer = load_tokenizer(cfg.data.tokenizer) if cfg.model.ctc is not None else None
        if cfg.model.ctc is not None:
            cfg.model.ctc.vocab_size = self.tokenizer.vocab_size
        for name, head in cfg.model.classifiers.items():  # classes from labels files, counts
            head.resolve(name)
        heads = {"ctc"} if cfg.model.ctc is not None else set()
        unknown = set(cfg.loss_weights) - heads - set(cfg.model.classifiers)
        if unknown:
            raise ValueError(f"loss_weights names no head of the model: {sorted(unknown)}")
        if cfg.precision not in ("auto", "amx", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, amx, bf16 or fp32, not {cfg.precision!r}")
        if cfg.precision == "bf16" and self.device.type == "cpu" and not cpu_has_amx():
            log.warning("precision bf16 on a CPU without AMX: expect it to be slower than fp32 "
                        "(set precision=amx or fp32)")
        log.info("precision: %s%s", "bf16" if use_bf16(self.device, cfg.precision) else "fp32",
                 f" ({cfg.precision})" if cfg.precision in ("auto", "amx") else "")
        torch.manual_seed(cfg.seed)
        self.model = ASTModel(cfg.model).to(self.device)
        if cfg.init and not checkpoints(self.exp):  # a resumed run gets its weights from the checkpoint
            from ..models.pretrained import init_from_pretrained, log_report

            log_report(init_from_pretrained(self.model, cfg.init, cfg.init_kernel_resize), self.exp / "init.txt")
        self._encoder_frozen = False
        if cfg.compile:
            self.model.encoder.compile_blocks()  # in place: parameter names (checkpoints) unchanged
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # parameters without a gradient in a step: a frozen encoder, a head without labels
            unused = cfg.optim.freeze_encoder_steps > 0 or bool(cfg.model.classifiers)
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, o), lr=o.lr, betas=tuple(o.betas), fused=o.fused or None
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(o, cfg.max_steps))
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.writer = None

    # state ------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.world,
            "rng": _rng_state(),
            "config": json.loads(json.dumps(_plain(self.cfg))),
        }

    def save(self) -> Path:
        path = self.exp / "ckpt" / f"step-{self.step:08d}.pt"
        if self.rank != 0:  # ranks hold the same model and optimiser state: rank 0 writes
            return path
        save_checkpoint(path, **self.state())
        for old in checkpoints(self.exp)[: -self.cfg.keep_checkpoints]:
            old.unlink()
        log.info("checkpoint %s (epoch %d, batch %d)", path, self.epoch, self.batch_in_epoch)
        return path

    def resume(self) -> bool:
        ckpts = checkpoints(self.exp)
        if not ckpts:
            return False
        state = load_checkpoint(ckpts[-1])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self._rng_after_skip = state["rng"]
        saved_world = state.get("world_size", 1)
        if saved_world != self.world and self.batch_in_epoch:
            # a rank's batches depend on the number of ranks: skip the same share of the epoch
            self.batch_in_epoch = math.ceil(self.batch_in_epoch * saved_world / self.world)
            log.warning(
                "checkpoint written by %d processes, resumed on %d: the rest of epoch %d is "
                "approximate (%d batches per rank skipped); exact resume needs the same number",
                saved_world, self.world, self.epoch, self.batch_in_epoch,
            )
        log.info("resumed from %s: step %d, epoch %d, batch %d", ckpts[-1], self.step, self.epoch, self.batch_in_epoch)
        return True

    # running ----------------------------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        self.exp.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            save_config(cfg, self.exp / "config.yaml")
        self._rng_after_skip = None
        resumed = self.resume()
        log.info(
            "model: %.2fM parameters, %d tokens/s of audio, device %s",
            self.model.num_parameters() / 1e6,
            cfg.model.encoder.freq_rows * cfg.model.encoder.frame_rate,
            self.device,
        )
        if self.world > 1:
            log.info("DDP: rank %d of %d, %d batches per process per step", self.rank, self.world, cfg.grad_accum)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = _NullWriter()
        if self.rank == 0:
            self.writer = SummaryWriter(str(self.exp / "tensorboard"), purge_step=self.step if resumed else None)
        featurizer = Featurizer(
            cfg.features, self.tokenizer, cfg.data.spec_augment, cfg.seed, cfg.data.max_duration,
            cfg.data.augment, heads=cfg.model.classifiers,
        )
        summary, batches = {}, None

        def more() -> bool:
            return self.step < cfg.max_steps and (cfg.max_epochs is None or self.epoch < cfg.max_epochs)

        while more():
            finished_epoch = self._run_epoch(featurizer, batches)
            batches = None
            if finished_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                if more():  # the next epoch's worker fills its buffer while we save and validate
                    batches = self._batches(featurizer)
                self.save()
                if cfg.validate and cfg.data.valid:
                    summary = self._validate_on_rank0()
        if not checkpoints(self.exp) or checkpoints(self.exp)[-1].name != f"step-{self.step:08d}.pt":
            self.save()
        if cfg.validate and cfg.data.valid and summary.get("step") != self.step:
            summary = self._validate_on_rank0()
        self.writer.close()
        self._plot()
        if self._owns_group:
            torch.distributed.destroy_process_group()
        return summary

    def _validate_on_rank0(self) -> dict:
        """Rank 0 validates on the whole set while the others wait: WER over all utterances."""
        summary = self.validate() if self.rank == 0 else {}
        if self.world > 1:
            torch.distributed.barrier()
        return summary

    def _batches(self, featurizer: Featurizer) -> Iterator:
        """This epoch's training batches from `batch_in_epoch` on. Starting the iterator starts
        the loader's workers, which begin reading at once."""
        cfg = self.cfg
        loader = make_loader(cfg.data.train, featurizer, cfg.data, train=True, seed=cfg.seed, epoch=self.epoch)
        batches = iter(loader)
        for _ in range(self.batch_in_epoch):  # data position of a resumed run (loader items)
            next(batches, None)
        return batches

    def _run_epoch(self, featurizer: Featurizer, batches: Iterator | None = None) -> bool:
        """Train until the epoch's data or max_steps runs out; True if the epoch ended.

        A step takes grad_accum batches per process. Ranks get unequal numbers of batches
        (whole shards each), so under DDP every step all-reduces a "have my batches" flag and
        the epoch ends for all ranks as soon as one runs out: no rank waits forever in a
        collective, at the price of the other ranks' last few batches of the epoch (a different
        few each epoch, as the shard order is reshuffled; docs/architecture.md)."""
        from tqdm import tqdm

        cfg = self.cfg
        batches = batches if batches is not None else self._batches(featurizer)
        if self._rng_after_skip is not None:
            _set_rng_state(self._rng_after_skip)
            self._rng_after_skip = None
        self.model.train()
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, desc=f"epoch {self.epoch}",
            disable=not cfg.progress or self.rank != 0, dynamic_ncols=True, leave=False,
        )
        t0, secs, losses, first = time.time(), 0.0, [], True
        while True:
            group, used = [], 0
            for batch in batches:
                used += 1
                if batch is not None:
                    group.append(batch)
                    if len(group) == cfg.grad_accum:
                        break
            ready = len(group) == cfg.grad_accum
            if self.world > 1:
                ready = _all_reduce([float(ready)], self.device, "min")[0] == 1.0
            if not ready:
                break
            self.batch_in_epoch += used
            if self.world > 1:
                torch.manual_seed(_step_seed(cfg.seed, self.rank, self.step))
            t_step = time.time()
            loss = self.train_step(group)
            if first and cfg.compile:
                log.info("step %d took %.1f s (torch.compile included)", self.step, time.time() - t_step)
            first = False
            self.step += 1
            secs += sum(b["seconds"] for b in group)
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                dt = time.time() - t0
                loss, rate = sum(losses) / len(losses), secs / max(dt, 1e-9)
                if self.world > 1:  # mean loss over ranks, audio seconds per second of all ranks
                    loss, rate = _all_reduce([loss / self.world, rate], self.device)
                self._log_train(loss, rate)
                t0, secs, losses = time.time(), 0.0, []
            if self.step % cfg.checkpoint_every == 0:
                self.save()
            if self.step >= cfg.max_steps:
                bar.close()
                return False
        bar.close()
        return True

    def train_step(self, batch: dict | list[dict]) -> float:
        """One optimiser step over a batch, or a list of batches (this rank's grad_accum ones).

        Each batch's loss is weighted by its share of the step's CTC target tokens (utterances
        for a batch without them) over all batches of all ranks: the gradient is that of one
        loss normalised over the global batch however it is split over ranks and accumulation,
        so 2 ranks x 1 batch equal 1 process accumulating the same 2 (tests/test_ddp.py).
        One batch on one process gets weight exactly 1."""
        cfg = self.cfg
        frozen = self.step < cfg.optim.freeze_encoder_steps  # a function of the step: resumes exactly
        if frozen != self._encoder_frozen:  # no grad -> AdamW neither moves nor decays them
            self._encoder_frozen = frozen
            self.model.encoder.requires_grad_(not frozen)
            log.info("step %d: encoder %s", self.step, "frozen" if frozen else "unfrozen")
        group = batch if isinstance(batch, list) else [batch]
        weights = [_batch_weight(b) for b in group]
        total = sum(weights)
        if self.world > 1:
            total = _all_reduce([total], self.device)[0]
        value = 0.0
        for i, (b, w) in enumerate(zip(group, weights)):
            sync = self.ddp is None or i == len(group) - 1  # DDP all-reduces at the last backward
            with nullcontext() if sync else self.ddp.no_sync():
                loss = self.batch_loss(b)
                if loss is not None:
                    (loss * (w * self.world / total)).backward()  # DDP divides by world size
                    value += float(loss.detach()) * (w / sum(weights))
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value

    def batch_loss(self, batch: dict) -> torch.Tensor | None:
        """Loss of one batch, normalised within the batch; None if it has no target."""
        feats = batch["feats"].to(self.device, non_blocking=True)
        lengths = batch["lengths"].to(self.device)
        with _autocast(self.device, self.cfg.precision):
            out = (self.ddp if self.ddp is not None else self.model)(feats, lengths)
        parts = self.losses(out, batch)
        if not parts:  # cannot happen with the Featurizer (it drops samples without any target)
            return None
        return sum(self.loss_weight(name) * part for name, part in parts.items())

    def loss_weight(self, name: str) -> float:
        return self.cfg.loss_weights.get(name, 1.0)

    def losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Loss of each head over the samples that have its target: "ctc" over those with a
        transcript (per target token), a classifier over those with its label (mean). A head
        with no target in the batch is absent: it adds no loss and no gradient."""
        core = getattr(self.model, "module", self.model)  # under a DDP wrapper
        parts: dict[str, torch.Tensor] = {}
        if core.ctc is not None and "target_lengths" in batch:
            targets = batch["targets"].to(self.device)
            tl = batch["target_lengths"].to(self.device)
            has = tl > 0
            if bool(has.all()):
                parts["ctc"] = CTCHead.loss(out["log_probs"], out["lengths"], targets, tl)
            elif bool(has.any()):  # targets holds only the transcribed samples' tokens already
                parts["ctc"] = CTCHead.loss(out["log_probs"][has], out["lengths"][has], targets, tl[has])
        for name, head in core.classifiers.items():
            if name in batch.get("labels", {}):
                mask = batch["label_mask"][name].to(self.device)
                part = head.loss(out[name], batch["labels"][name].to(self.device), mask)
                if part is not None:
                    parts[name] = part
        return parts

    @torch.no_grad()
    def validate(self) -> dict:
        """Loss per head and in total; WER/CER of greedy CTC decoding on the transcribed samples;
        accuracy (single-label) or mAP (multi-label) of each classifier on its labelled ones."""
        from ..classify import accuracy, mean_average_precision
        from ..metrics import score

        cfg = self.cfg
        core = getattr(self.model, "module", self.model)
        featurizer = Featurizer(cfg.features, self.tokenizer, None, cfg.seed, heads=cfg.model.classifiers)
        loader = make_loader(cfg.data.valid, featurizer, cfg.data, train=False, seed=cfg.seed, rank=0, world_size=1)
        self.model.eval()
        refs, hyps, sums = {}, {}, {}
        scored: dict[str, tuple[list, list]] = {h: ([], []) for h in core.classifiers}
        for batch in loader:
            if batch is None:
                continue
            with _autocast(self.device, cfg.precision):
                out = self.model(batch["feats"].to(self.device), batch["lengths"].to(self.device))
            for name, part in self.losses(out, batch).items():
                n = int(batch["target_lengths"].sum()) if name == "ctc" else int(batch["label_mask"][name].sum())
                total, count = sums.get(name, (0.0, 0))
                sums[name] = (total + float(part) * n, count + n)
            if core.ctc is not None:
                texts = greedy_decode(out["log_probs"], out["lengths"], self.tokenizer)
                for i, h, ref, n in zip(batch["ids"], texts, batch["texts"], batch["target_lengths"].tolist()):
                    if n > 0:
                        hyps[i], refs[i] = h, ref
            for name, mask in batch.get("label_mask", {}).items():
                scored[name][0].append(batch["labels"][name][mask])
                scored[name][1].append(out[name][mask.to(out[name].device)].float().cpu())
        self.model.train()
        mean = {name: total / max(count, 1) for name, (total, count) in sums.items()}
        row = {"split": "valid", "step": self.step, "epoch": self.epoch,
               "loss": sum(self.loss_weight(n) * v for n, v in mean.items())}
        if refs:
            report = score(refs, hyps)
            row["wer"], row["cer"] = report.wer, report.cer
        if len(mean) > 1 or core.ctc is None:
            row.update({f"loss_{n}": v for n, v in mean.items()})
        for name, (targets, logits) in scored.items():
            if not targets:
                continue
            y, z = torch.cat(targets), torch.cat(logits)
            if core.classifiers[name].cfg.multi_label:
                row[f"map_{name}"] = 100 * mean_average_precision(y.numpy(), torch.sigmoid(z).numpy())
            else:
                row[f"acc_{name}"] = 100 * accuracy(y.argmax(1).numpy(), z.argmax(1).numpy())
        self._write_metrics(row)
        figures = " ".join(f"{k} {v:.4f}" if k.startswith("loss") else f"{k.upper()} {v:.2f}%"
                           for k, v in row.items() if k not in ("split", "step", "epoch"))
        log.info("valid epoch %d step %d: %s", self.epoch, self.step, figures)
        for k, v in row.items():
            if k not in ("split", "step", "epoch"):
                self.writer.add_scalar(f"valid/{k}", v, self.step)
        self._plot()
        return row

    def _log_train(self, loss: float, rtf: float) -> None:
        lr = self.scheduler.get_last_lr()[0]
        row = {"split": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr,
               "audio_seconds_per_second": rtf}
        self._write_metrics(row)
        self.writer.add_scalar("train/loss", loss, self.step)
        self.writer.add_scalar("train/lr", lr, self.step)
        self.writer.add_scalar("train/audio_seconds_per_second", rtf, self.step)
        log.info("step %d epoch %d loss %.4f lr %.2e %.0fx real time", self.step, self.epoch, loss, lr, rtf)

    def _write_metrics(self, row: dict) -> None:
        if self.rank != 0:
            return
        with open(self.exp / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _plot(self) -> None:
        if self.rank != 0:
            return
        from ..plots import plot_curves

        if (self.exp / "metrics.jsonl").exists():
            plot_curves(self.exp / "metrics.jsonl", self.exp / "curves.png")


def _plain(obj):
    from ..config import to_dict

    return to_dict(obj)


def setup_logging(exp_dir: str | Path | None = None) -> None:
    """Timestamped log lines on stderr and, for a run, in exp_dir/log.txt."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        h = logging.StreamHandler()
        h.setFormatter(fmt)
        root.addHandler(h)
    if exp_dir is not None and os.environ.get("RANK", "0") == "0":  # rank 0 writes the log
        Path(exp_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(exp_dir) / "log.txt")
        fh.setFormatter(fmt)
        root.addHandler(fh)


def train(config_path: str | None, overrides: list[str] = ()) -> dict:
    cfg = load_config(TrainConfig, config_path, overrides)
    setup_logging(cfg.exp_dir)
    return Trainer(cfg).run()


# ---- weight averaging -----------------------------------------------------------------


def average_checkpoints(exp_dir: str | Path, last: int = 5, out_dir: str | Path | None = None) -> Path:
    """Mean of the model weights of the last `last` checkpoints -> a model directory.

    The AST paper averages the weights of its last epochs; for CTC this is a cheap, reliable
    gain over the final checkpoint.
    """
    from ..config import from_dict

    exp = Path(exp_dir)
    ckpts = checkpoints(exp)[-last:]
    if not ckpts:
        raise FileNotFoundError(f"{exp}: no checkpoints in {exp / 'ckpt'}")
    avg: dict[str, torch.Tensor] = {}
    for p in ckpts:
        sd = load_checkpoint(p)["model"]
        for k, v in sd.items():
            avg[k] = avg.get(k, 0) + v.double() / len(ckpts)
    last_state = load_checkpoint(ckpts[-1])
    cfg = from_dict(TrainConfig, last_state["config"])
    model = ASTModel(cfg.model)
    sd = {k: v.to(model.state_dict()[k].dtype) for k, v in avg.items()}
    model.load_state_dict(sd)
    out = Path(out_dir) if out_dir else exp / "model"
    model.save(out, cfg.features, load_tokenizer(cfg.data.tokenizer) if cfg.model.ctc is not None else None)
    (out / "averaged.txt").write_text("\n".join(str(p) for p in ckpts) + "\n")
    log.info("averaged %d checkpoints (%s .. %s) -> %s", len(ckpts), ckpts[0].name, ckpts[-1].name, out)
    return out
