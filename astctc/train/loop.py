"""The training loop: AdamW, warm-up + decay, clipping, bf16 autocast, exact resume.

A checkpoint holds everything that decides what happens next (model, optimiser, scheduler,
step, data position, RNG state), so a run killed at any point and restarted with the same
command continues to the same parameters an uninterrupted run reaches.

Top to bottom: `train` -> `Trainer.run` (epochs, checkpoints, validation) -> `Trainer.run_epoch`
(steps over one epoch's batches) -> `Trainer.train_step` (one optimiser step).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import load_config, save_config, to_dict
from ..data.pipeline import Featurizer, make_loader
from ..device import autocast, cpu_has_fast_bf16, resolve_device, use_bf16
from ..logs import progress_disabled, setup_logging
from ..models.model import ASTModel
from ..models.pretrained import init_from_pretrained, log_report
from ..tokenizer import load_tokenizer
from . import distributed
from .checkpoint import (
    checkpoint_path,
    checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, check_config
from .logbook import Logbook
from .losses import batch_weight, head_losses, loss_weight, weighted_loss
from .optim import make_optimizer
from .validate import validate

log = logging.getLogger("astctc.train")


def train(config_path: str | None, overrides: list[str] = ()) -> dict:
    """`astctc train`: run (or resume) the configured training; returns the last validation row."""
    cfg = load_config(TrainConfig, config_path, overrides)
    setup_logging(cfg.exp_dir)
    return Trainer(cfg).run()


class Trainer:
    """A run's state: the model and its optimiser, and where the run is (step, epoch, batch)."""

    def __init__(self, cfg: TrainConfig):
        check_config(cfg)
        self.cfg = cfg
        self.exp = Path(cfg.exp_dir)
        self.owns_group = distributed.owns_process_group()
        self.rank, self.world, self.device = distributed.init_distributed(resolve_device(cfg.device))
        self.tokenizer = load_tokenizer(cfg.data.tokenizer) if cfg.model.ctc is not None else None
        if cfg.model.ctc is not None:
            cfg.model.ctc.vocab_size = self.tokenizer.vocab_size
        for name, head in cfg.model.classifiers.items():  # classes from labels files, counts
            head.resolve(name)
        _log_precision(self.device, cfg.precision)
        self.model = build_model(cfg, self.device, pretrained=not checkpoints(self.exp))
        self.ddp = None
        if self.world > 1:
            # parameters without a gradient in a step: a frozen encoder, a head without labels
            unused = cfg.optim.freeze_encoder_steps > 0 or bool(cfg.model.classifiers)
            self.ddp = distributed.wrap_ddp(self.model, self.device, find_unused_parameters=unused)
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg.optim, cfg.max_steps)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # loader items of this epoch already trained on
        self.encoder_frozen = False
        self.rng_after_skip: dict | None = None  # a resumed run's RNG, restored at its data position
        self.logbook = Logbook(self.exp, rank=-1)  # keeps nothing; run() opens the run's

    # checkpoints ------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.world,
            "rng": rng_state(),
            "config": json.loads(json.dumps(to_dict(self.cfg))),
        }

    def save(self) -> Path:
        path = checkpoint_path(self.exp, self.step)
        if self.rank != 0:  # ranks hold the same model and optimiser state: rank 0 writes
            return path
        save_checkpoint(path, **self.state())
        prune_checkpoints(self.exp, self.cfg.keep_checkpoints)
        log.info("checkpoint %s (epoch %d, batch %d)", path, self.epoch, self.batch_in_epoch)
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint, if there is one."""
        ckpts = checkpoints(self.exp)
        if not ckpts:
            return False
        state = load_checkpoint(ckpts[-1])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.rng_after_skip = state["rng"]
        saved_world = state.get("world_size", 1)
        if saved_world != self.world and self.batch_in_epoch:
            # a rank's batches depend on the number of ranks: skip the same share of the epoch
            self.batch_in_epoch = math.ceil(self.batch_in_epoch * saved_world / self.world)
            log.warning(
                "checkpoint written by %d processes, resumed on %d: the rest of epoch %d is "
                "approximate (%d batches per rank skipped); exact resume needs the same number",
                saved_world,
                self.world,
                self.epoch,
                self.batch_in_epoch,
            )
        log.info("resumed from %s: step %d, epoch %d, batch %d", ckpts[-1], self.step, self.epoch, self.batch_in_epoch)
        return True

    # the loop ---------------------------------------------------------------------------

    def run(self) -> dict:
        """Train to max_steps (or max_epochs), resuming from the newest checkpoint; a checkpoint
        and a validation at every epoch end and at the end. Returns the last validation row."""
        cfg = self.cfg
        self.exp.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            save_config(cfg, self.exp / "config.yaml")
        self.rng_after_skip = None
        resumed = self.resume()
        log.info(
            "model: %.2fM parameters, %d tokens/s of audio, device %s",
            self.model.num_parameters() / 1e6,
            cfg.model.encoder.freq_rows * cfg.model.encoder.frame_rate,
            self.device,
        )
        if self.world > 1:
            log.info("DDP: rank %d of %d, %d batches per process per step", self.rank, self.world, cfg.grad_accum)
        self.logbook = Logbook(self.exp, self.rank, purge_step=self.step if resumed else None)
        featurizer = Featurizer(
            cfg.features,
            self.tokenizer,
            cfg.data.spec_augment,
            cfg.seed,
            cfg.data.max_duration,
            cfg.data.augment,
            heads=cfg.model.classifiers,
        )
        summary, batches = {}, None

        def more() -> bool:
            return self.step < cfg.max_steps and (cfg.max_epochs is None or self.epoch < cfg.max_epochs)

        while more():
            finished_epoch = self.run_epoch(featurizer, batches)
            batches = None
            if finished_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                if more():  # the next epoch's worker fills its buffer while we save and validate
                    batches = self.epoch_batches(featurizer)
                self.save()
                if cfg.validate and cfg.data.valid:
                    summary = self.validate_on_rank0()
        if not checkpoints(self.exp) or checkpoints(self.exp)[-1].name != checkpoint_path(self.exp, self.step).name:
            self.save()
        if cfg.validate and cfg.data.valid and summary.get("step") != self.step:
            summary = self.validate_on_rank0()
        self.logbook.close()
        self.logbook.plot()
        if self.owns_group:
            distributed.barrier()  # no rank tears gloo down while another still talks to it
            distributed.destroy()
        return summary

    def epoch_batches(self, featurizer: Featurizer) -> Iterator:
        """This epoch's training batches from `batch_in_epoch` on. Starting the iterator starts
        the loader's workers, which begin reading at once."""
        cfg = self.cfg
        loader = make_loader(cfg.data.train, featurizer, cfg.data, train=True, seed=cfg.seed, epoch=self.epoch)
        batches = iter(loader)
        for _ in range(self.batch_in_epoch):  # data position of a resumed run (loader items)
            next(batches, None)
        return batches

    def run_epoch(self, featurizer: Featurizer, batches: Iterator | None = None) -> bool:
        """Train until the epoch's data or max_steps runs out; True if the epoch ended.

        A step takes grad_accum batches per process. Ranks get unequal numbers of batches
        (whole shards each), so under DDP every step all-reduces a "have my batches" flag and
        the epoch ends for all ranks as soon as one runs out: no rank waits forever in a
        collective, at the price of the other ranks' last few batches of the epoch (a different
        few each epoch, as the shard order is reshuffled; docs/architecture.md)."""
        cfg = self.cfg
        batches = batches if batches is not None else self.epoch_batches(featurizer)
        if self.rng_after_skip is not None:
            set_rng_state(self.rng_after_skip)
            self.rng_after_skip = None
        self.model.train()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc=f"epoch {self.epoch}",
            disable=progress_disabled(cfg.progress) or self.rank != 0,
            dynamic_ncols=True,
            leave=False,
        )
        window, first = _Window(), True
        while True:
            group, used = take_batches(batches, cfg.grad_accum)
            ready = len(group) == cfg.grad_accum
            if self.world > 1:
                ready = distributed.all_ranks(ready, self.device)
            if not ready:
                break
            self.batch_in_epoch += used
            if self.world > 1:
                torch.manual_seed(distributed.step_seed(cfg.seed, self.rank, self.step))
            t_step = time.time()
            loss = self.train_step(group)
            if first and cfg.compile:
                log.info("step %d took %.1f s (torch.compile included)", self.step, time.time() - t_step)
            first = False
            self.step += 1
            window.add(loss, sum(b["seconds"] for b in group))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                loss, rate = window.mean_loss(), window.rate()
                if self.world > 1:  # mean loss over ranks, audio seconds per second of all ranks
                    loss, rate = distributed.all_reduce([loss / self.world, rate], self.device)
                self.log_train(loss, rate)
                window = _Window()
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
        self.freeze_encoder(self.step < cfg.optim.freeze_encoder_steps)  # a function of the step: resumes exactly
        group = batch if isinstance(batch, list) else [batch]
        weights = [batch_weight(b) for b in group]
        total = sum(weights)
        if self.world > 1:
            total = distributed.all_reduce([total], self.device)[0]
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

    def freeze_encoder(self, frozen: bool) -> None:
        if frozen != self.encoder_frozen:  # no grad -> AdamW neither moves nor decays them
            self.encoder_frozen = frozen
            self.model.encoder.requires_grad_(not frozen)
            log.info("step %d: encoder %s", self.step, "frozen" if frozen else "unfrozen")

    def batch_loss(self, batch: dict) -> torch.Tensor | None:
        """Loss of one batch, normalised within the batch; None if it has no target."""
        feats = batch["feats"].to(self.device, non_blocking=True)
        lengths = batch["lengths"].to(self.device)
        with autocast(self.device, self.cfg.precision):
            out = (self.ddp if self.ddp is not None else self.model)(feats, lengths)
        return weighted_loss(self.losses(out, batch), self.cfg.loss_weights)

    def losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        return head_losses(self.model, out, batch, self.device)

    def loss_weight(self, name: str) -> float:
        return loss_weight(self.cfg.loss_weights, name)

    # records ----------------------------------------------------------------------------

    def validate_on_rank0(self) -> dict:
        """Rank 0 validates on the whole set while the others wait: WER over all utterances."""
        summary = self.validate() if self.rank == 0 else {}
        if self.world > 1:
            distributed.barrier()
        return summary

    def validate(self) -> dict:
        row = {
            "split": "valid",
            "step": self.step,
            "epoch": self.epoch,
            **validate(self.model, self.cfg, self.tokenizer, self.device),
        }
        self.logbook.write(row)
        figures = " ".join(
            f"{k} {v:.4f}" if k.startswith("loss") else f"{k.upper()} {v:.2f}%"
            for k, v in row.items()
            if k not in ("split", "step", "epoch")
        )
        log.info("valid epoch %d step %d: %s", self.epoch, self.step, figures)
        self.logbook.plot()
        return row

    def log_train(self, loss: float, rate: float) -> None:
        lr = self.scheduler.get_last_lr()[0]
        self.logbook.write(
            {
                "split": "train",
                "step": self.step,
                "epoch": self.epoch,
                "loss": loss,
                "lr": lr,
                "audio_seconds_per_second": rate,
            }
        )
        log.info("step %d epoch %d loss %.4f lr %.2e %.0fx real time", self.step, self.epoch, loss, lr, rate)


def build_model(cfg: TrainConfig, device: torch.device, pretrained: bool) -> ASTModel:
    """The model from cfg.seed, with cfg.init's weights when `pretrained` (a resumed run gets its
    weights from the checkpoint instead)."""
    torch.manual_seed(cfg.seed)
    model = ASTModel(cfg.model).to(device)
    if cfg.init and pretrained:
        log_report(init_from_pretrained(model, cfg.init, cfg.init_kernel_resize), Path(cfg.exp_dir) / "init.txt")
    if cfg.compile:
        model.encoder.compile_blocks()  # in place: parameter names (checkpoints) unchanged
    return model


def take_batches(batches: Iterator, n: int) -> tuple[list[dict], int]:
    """The next n batches (fewer where the epoch runs out), and how many loader items that took:
    an item is None where the Featurizer dropped all of a batch's samples."""
    group, used = [], 0
    for batch in batches:
        used += 1
        if batch is not None:
            group.append(batch)
            if len(group) == n:
                break
    return group, used


class _Window:
    """The steps since the last log line: their losses and audio seconds."""

    def __init__(self):
        self.start, self.seconds, self.losses = time.time(), 0.0, []

    def add(self, loss: float, seconds: float) -> None:
        self.seconds += seconds
        self.losses.append(loss)

    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    def rate(self) -> float:
        """Audio seconds trained on per second."""
        return self.seconds / max(time.time() - self.start, 1e-9)


def _log_precision(device: torch.device, precision: str) -> None:
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning(
            "precision bf16 on a CPU without AMX: expect it to be slower than fp32 (set precision=auto or fp32)"
        )
    log.info(
        "precision: %s%s", "bf16" if use_bf16(device, precision) else "fp32", " (auto)" if precision == "auto" else ""
    )
