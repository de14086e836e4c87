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
from ..data.shards import lost_summary
from ..device import autocast, cuda_unavailable_reason, peak_tflops, precision_line, resolve_device, use_bf16
from ..logs import progress_disabled, setup_logging
from ..models.flops import encoder_tokens, train_flops
from ..models.model import ASTModel, ModelConfig
from ..models.pretrained import init_from_pretrained, log_report
from ..tokenizer import load_tokenizer
from . import distributed
from .checkpoint import (
    check_weights_fit,
    checkpoint_path,
    checkpoints,
    load_latest,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, check_config, make_featurizer
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
        self.parallel = distributed.launched_by_torchrun()  # DDP, also with one process
        if cfg.device == "auto" and self.device.type == "cpu":
            log.warning(
                "device auto: no usable GPU (%s), training on the CPU; set device: cuda to make "
                "that an error, device: cpu to silence this",
                cuda_unavailable_reason(),
            )
        self.tokenizer = load_tokenizer(cfg.data.tokenizer) if cfg.model.ctc is not None else None
        if cfg.model.ctc is not None:
            cfg.model.ctc.vocab_size = self.tokenizer.vocab_size
        for name, head in cfg.model.classifiers.items():  # classes from labels files, counts
            head.resolve(name)
        log.info(precision_line(self.device, cfg.precision))
        self.model = build_model(cfg, self.device, pretrained=not checkpoints(self.exp))
        # under DDP the wrapper is made at the first step and remade when the encoder is frozen
        # or unfrozen (DDP syncs the parameters that require a gradient when it is made), so
        # that only a head without labels in a batch needs find_unused_parameters
        self.ddp = None
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg.optim, cfg.max_steps)
        log.info(
            "optimizer: AdamW, %s", "fused (one kernel over all tensors)" if cfg.optim.fused else "per-tensor loop"
        )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # loader items of this epoch already trained on
        self.encoder_frozen: bool | None = None  # None: not set yet
        self.rng_after_skip: dict | None = None  # a resumed run's RNG, restored at its data position
        self.logbook = Logbook(self.exp, rank=-1)  # keeps nothing; run() opens the run's
        self.window = _Window()
        self.peak_tflops = cfg.peak_tflops or peak_tflops(self.device)
        self.bf16 = use_bf16(self.device, cfg.precision)

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
        had = bool(checkpoints(self.exp))
        found = load_latest(self.exp, log.warning)
        if found is None:
            if had:  # the model was built for resuming (no `init` weights): not a fresh start
                raise RuntimeError(
                    f"{self.exp / 'ckpt'}: no checkpoint loads (each moved to <name>.bad); run again to start afresh"
                )
            return False
        path, state = found
        check_weights_fit(path, state["model"], {k: v.shape for k, v in self.model.state_dict().items()})
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
        log.info("resumed from %s: step %d, epoch %d, batch %d", path, self.step, self.epoch, self.batch_in_epoch)
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
        if self.parallel:
            log.info("DDP: rank %d of %d, %d batches per process per step", self.rank, self.world, cfg.grad_accum)
        self.logbook = Logbook(self.exp, self.rank, purge_step=self.step if resumed else None)
        featurizer = make_featurizer(cfg, self.tokenizer, train=True)
        summary, batches = {}, None

        def more() -> bool:
            return self.step < cfg.max_steps and (cfg.max_epochs is None or self.epoch < cfg.max_epochs)

        while more():
            start = self.step
            finished_epoch = self.run_epoch(featurizer, batches)
            batches = None
            if finished_epoch and self.step == start:  # would loop forever, saving step after step
                dropped = self.window.take_dropped()
                raise ValueError(
                    f"{cfg.data.train}: epoch {self.epoch} gave no batch to train on"
                    + (f": {lost_summary(dropped, verb='dropped')}" if dropped else " (no utterances read)")
                )
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
        self.report_dropped(self.window.take_dropped())  # the last epoch's tail
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
        loader = make_loader(
            cfg.data.train,
            featurizer,
            cfg.data,
            train=True,
            seed=cfg.seed,
            epoch=self.epoch,
            pin_memory=self.device.type == "cuda",
        )
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
        first = True
        while True:
            t_wait = time.perf_counter()
            group, used, dropped = take_batches(batches, cfg.grad_accum)
            self.window.wait += time.perf_counter() - t_wait
            self.window.dropped += dropped
            ready = len(group) == cfg.grad_accum
            if self.parallel:
                ready = distributed.all_ranks(ready)
            if not ready:
                break
            self.batch_in_epoch += used
            if self.parallel:
                torch.manual_seed(distributed.step_seed(cfg.seed, self.rank, self.step))
            t_step = time.time()
            loss, grad_norm = self.train_step(group)
            if first and cfg.compile:
                log.info("step %d took %.1f s (torch.compile included)", self.step, time.time() - t_step)
            first = False
            self.window.add(loss, grad_norm, group, self.cfg.model, not self.encoder_frozen)
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                self.log_train(bar)
            if self.step % cfg.checkpoint_every == 0:
                self.save()
            if self.step >= cfg.max_steps:
                bar.close()
                return False
        bar.close()
        return True

    def train_step(self, batch: dict | list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step over a batch, or a list of batches (this rank's grad_accum ones);
        returns the loss and the gradient norm before clipping, as device tensors (reading them
        would make the host wait for the device: the loop reads them at log steps only).

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
        if self.parallel:
            total = distributed.all_reduce([total])[0]
        value = torch.zeros((), device=self.device)
        for i, (b, w) in enumerate(zip(group, weights)):
            sync = self.ddp is None or i == len(group) - 1  # DDP all-reduces at the last backward
            with nullcontext() if sync else self.ddp.no_sync():
                loss = self.batch_loss(b)
                if loss is not None:
                    (loss * (w * self.world / total)).backward()  # DDP divides by world size
                    value += loss.detach() * (w / sum(weights))
        params = [p for p in self.model.parameters() if p.grad is not None]
        if cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value, norm

    def freeze_encoder(self, frozen: bool) -> None:
        if frozen != self.encoder_frozen:  # no grad -> AdamW neither moves nor decays them
            if self.encoder_frozen is not None or frozen:
                log.info("step %d: encoder %s", self.step, "frozen" if frozen else "unfrozen")
            self.encoder_frozen = frozen
            self.model.encoder.requires_grad_(not frozen)
            if self.parallel:  # DDP buckets the parameters that require a gradient when made
                self.ddp = None
                self.ddp = distributed.wrap_ddp(
                    self.model, self.device, find_unused_parameters=bool(self.cfg.model.classifiers)
                )

    def batch_loss(self, batch: dict) -> torch.Tensor | None:
        """Loss of one batch, normalised within the batch; None if it has no target."""
        feats = batch["feats"].to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.precision):  # lengths stay on the CPU (encoder doc)
            out = (self.ddp if self.ddp is not None else self.model)(feats, batch["lengths"])
        return weighted_loss(self.losses(out, batch), self.cfg.loss_weights)

    def losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        return head_losses(self.model, out, batch, self.device)

    def loss_weight(self, name: str) -> float:
        return loss_weight(self.cfg.loss_weights, name)

    # records ----------------------------------------------------------------------------

    def validate_on_rank0(self) -> dict:
        """Rank 0 validates on the whole set while the others wait: WER over all utterances."""
        summary = self.validate() if self.rank == 0 else {}
        if self.parallel:
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

        def figure(k: str, v) -> str:
            if k.startswith("loss"):
                return f"{k} {v:.4f}"
            return f"{v} left out" if k == "dropped" else f"{k.upper()} {v:.2f}%"

        figures = " ".join(figure(k, v) for k, v in row.items() if k not in ("split", "step", "epoch"))
        log.info("valid epoch %d step %d: %s", self.epoch, self.step, figures)
        self.logbook.plot()
        return row

    def log_train(self, bar=None) -> None:
        """The window since the last log step: a metrics row, a log line, dropped utterances.
        Reads the device's loss and gradient norm (the one wait for the device in the window)."""
        w, self.window = self.window, _Window()
        loss, grad_norm, grad_max = w.device_figures()
        elapsed = max(time.perf_counter() - w.start, 1e-9)
        figures = [loss, grad_norm, w.seconds, w.tokens, w.flops, w.wait, elapsed]
        if self.parallel:  # mean loss, norm, wait and time over ranks, totals of the rest
            figures = distributed.all_reduce(figures)
            figures[0] /= self.world
            figures[1] /= self.world
            figures[5] /= self.world
            figures[6] /= self.world
        loss, grad_norm, seconds, tokens, flops, wait, elapsed = figures
        lr = self.scheduler.get_last_lr()[0]
        row = {
            "split": "train",
            "step": self.step,
            "epoch": self.epoch,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "grad_norm_max": grad_max,
            "audio_seconds_per_second": seconds / elapsed,
            "tokens_per_second": tokens / elapsed,
            "data_wait": wait / elapsed,
        }
        mfu = ""
        if self.peak_tflops and self.bf16:
            row["mfu"] = flops / elapsed / (self.peak_tflops * 1e12) / self.world
            mfu = f" MFU {100 * row['mfu']:.1f}%"
        dropped = self.report_dropped(w.take_dropped())
        if dropped:
            row.update({f"dropped_{k}": v for k, v in dropped.items()})
        self.logbook.write(row)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.3f}")
        log.info(
            "step %d epoch %d loss %.4f lr %.2e grad norm %.2f %.0fx real time %.0f tokens/s%s data wait %.0f%%%s",
            self.step,
            self.epoch,
            loss,
            lr,
            grad_norm,
            row["audio_seconds_per_second"],
            row["tokens_per_second"],
            mfu,
            100 * row["data_wait"],
            "".join(f" {k} {v}" for k, v in dropped.items()),
        )

    def report_dropped(self, dropped: list[tuple[str, str, str]]) -> dict[str, int]:
        """Utterances the loader dropped (every rank's): appended to exp_dir/dropped.tsv by rank 0
        with their reasons, a warning naming the first few; returns the counts per kind."""
        if self.parallel:
            dropped = [d for part in distributed.gather(dropped) for d in part]
        counts: dict[str, int] = {}
        for _, kind, _ in dropped:
            counts[kind] = counts.get(kind, 0) + 1
        if dropped and self.rank == 0:
            path = self.exp / "dropped.tsv"
            with open(path, "a", encoding="utf-8") as f:
                for utt, kind, detail in dropped:
                    f.write(f"{self.step}\t{self.epoch}\t{utt}\t{kind}\t{detail}\n")
            first = ", ".join(f"{utt} ({kind}: {detail})" for utt, kind, detail in dropped[:3])
            log.warning(
                "%d utterance(s) dropped by the loader (%s), e.g. %s; all listed in %s",
                len(dropped),
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                first,
                path,
            )
        return counts


def build_model(cfg: TrainConfig, device: torch.device, pretrained: bool) -> ASTModel:
    """The model from cfg.seed, with cfg.init's weights when `pretrained` (a resumed run gets its
    weights from the checkpoint instead)."""
    torch.manual_seed(cfg.seed)
    model = ASTModel(cfg.model).to(device)
    if cfg.init and pretrained:
        report = init_from_pretrained(model, cfg.init, cfg.init_kernel_resize, cfg.features)
        log_report(report, Path(cfg.exp_dir) / "init.txt")
    if cfg.compile:
        model.encoder.compile_blocks()  # in place: parameter names (checkpoints) unchanged
        log.info(
            "torch.compile: the %d blocks and the final LayerNorm as one graph, dynamic shapes (attention "
            "kernels are custom ops; the backend is logged at the first step)",
            cfg.model.encoder.depth,
        )
    return model


def take_batches(batches: Iterator, n: int) -> tuple[list[dict], int, list]:
    """The next n batches (fewer where the epoch runs out), how many loader items that took, and
    the utterances the loader dropped meanwhile: an item without "feats" only reports drops."""
    group, used, dropped = [], 0, []
    for batch in batches:
        used += 1
        if batch is None:
            continue
        dropped += batch.get("dropped", [])
        if "feats" in batch:
            group.append(batch)
            if len(group) == n:
                break
    return group, used, dropped


class _Window:
    """The steps since the last log line: their losses and gradient norms (device tensors, read
    at the log step), audio seconds, encoder tokens, model FLOPs, time waiting for the loader,
    and the utterances the loader dropped."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds = self.tokens = self.flops = self.wait = 0.0
        self.losses: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []
        self.dropped: list[tuple[str, str, str]] = []

    def add(self, loss: torch.Tensor, norm: torch.Tensor, group: list[dict], model: ModelConfig, backward: bool):
        self.losses.append(loss)
        self.norms.append(norm)
        for b in group:
            frames = b["lengths"].tolist()  # a CPU tensor
            self.seconds += b["seconds"]
            self.tokens += sum(encoder_tokens(model.encoder, n) for n in frames)
            self.flops += train_flops(model, frames, encoder_backward=backward)

    def device_figures(self) -> tuple[float, float, float]:
        """(mean loss, mean gradient norm, largest gradient norm): one read of the device."""
        if not self.losses:
            return float("nan"), float("nan"), float("nan")
        norms = torch.stack([n.float() for n in self.norms])
        loss, mean, top = torch.stack([torch.stack(self.losses).mean(), norms.mean(), norms.max()]).tolist()
        return loss, mean, top

    def take_dropped(self) -> list[tuple[str, str, str]]:
        out, self.dropped = self.dropped, []
        return out
