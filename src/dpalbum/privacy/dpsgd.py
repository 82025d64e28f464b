"""Album-level DP-SGD over Opacus: Poisson sampling of albums, one clip per album, Gaussian noise.

One step (Abadi et al. 2016, with the album as the unit):
1. each of the N albums joins the batch independently with probability q (Poisson; the batch
   may be empty and is still a step);
2. every row of a sampled album is in the batch; Opacus gives per-row gradients, which are summed
   per album and clipped once to C (``album_gradients``);
3. noise N(0, σ²C²) is added to the sum of clipped album gradients, and the result is divided by
   the *expected* batch size qN (a public constant, so the division costs no privacy);
4. any torch optimizer consumes that gradient (post-processing).
Steps are accounted as ``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)``.

On W processes (``torch.distributed``, started by torchrun: see ``privacy.distributed``), rank r
Poisson-samples its own albums r, r + W, ... with the same q, computes the clipped sum over them,
rank 0 alone adds the noise (as Opacus' DistributedDPOptimizer does), and one all-reduce sums the
ranks' contributions: the update is the single-process update in distribution, with the same q,
σ, C and T, so the ε is the same.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..distributed import current_shard
from .accounting import (
    SEARCH_DISCRETIZATION,
    RunningRdpEpsilon,
    dpsgd_history_records,
    pld_epsilon,
)
from .album_gradients import (
    Collate,
    RowLoss,
    clipped_album_sum,
    to_device,
    unwrap_dp,
    wrap_for_dp,
)
from .checkpoint import global_rng_state, load_checkpoint, save_checkpoint, set_global_rng_state
from .ghost_clipping import GhostClipper, ghost_clipped_album_sum
from .randomness import NoiseSource, gaussian_tensor, restore_checkpoint_state, state_for_checkpoint
from .sampling import PoissonAlbumSampler

logger = logging.getLogger(__name__)

GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")


@dataclass
class DPSGDConfig:
    """One DP-SGD run. Give ``expected_batch_albums`` or ``sample_rate`` (q over albums)."""

    noise_multiplier: float
    steps: int
    max_grad_norm: float = 1.0
    expected_batch_albums: float | None = None
    sample_rate: float | None = None
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | adam | sgd
    weight_decay: float = 0.0
    mechanism: str = "dpsgd"  # its name on the ledger: keys its own noise and sampling streams
    noise_source: NoiseSource = field(default_factory=NoiseSource, repr=False)  # secure default
    public_seed: int = 0  # model-side randomness only (dropout, the loss's own draws): public
    expected_batch: float | None = None  # the public q·N the noisy sum is divided by (the plan's;
    # None: q times the albums given, for tests where N is public)
    grad_sample_mode: str = "hooks"  # hooks | functorch | ghost (album-level ghost clipping)
    album_reduction: str = "mean"  # an album's loss: mean or sum of its rows' losses
    physical_batch_rows: int = 32  # rows per forward/backward: memory only, not privacy
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # steps; 0: only at the end (and when stopped)
    resume: bool = True  # resume from checkpoint_dir if it holds a checkpoint
    epsilon_inf_baseline: bool = False  # NON-PRIVATE: no clipping, no noise
    delta: float = 1e-5
    device: str | None = None  # the model is moved here BEFORE Opacus wraps it

    def resolved_sample_rate(self, n_albums: int) -> float:
        """q = expected batch (albums) / N albums."""
        if self.sample_rate is not None:
            q = float(self.sample_rate)
        elif self.expected_batch_albums is not None:
            q = float(self.expected_batch_albums) / n_albums
        else:
            raise ValueError("DPSGDConfig needs expected_batch_albums or sample_rate")
        if not 0 < q <= 1:
            raise ValueError(f"sample rate {q:.4g} over {n_albums} albums must be in (0, 1]")
        return q

    @classmethod
    def from_plan(
        cls,
        plan: Mapping[str, Any],
        name: str,
        privacy_params: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> DPSGDConfig:
        """The config of mechanism ``name`` of a privacy plan (σ, q, steps, C, δ, baseline).

        ``privacy_params`` (the ``privacy:`` block) supplies grad_sample_mode, album_reduction
        and physical_batch_rows; ``overrides`` (lr, seed, checkpoint_dir, ...) come last.
        """
        mech = next((m for m in plan["mechanisms"] if m["name"] == name), None)
        if mech is None or mech["kind"] != "dpsgd":
            raise KeyError(f"no dpsgd mechanism {name!r} in the privacy plan")
        values: dict[str, Any] = {
            "noise_multiplier": float(mech["noise_multiplier"]),
            "sample_rate": float(mech["sample_rate"]),
            "steps": int(mech.get("train_steps", mech["steps"])),  # reserve steps not trained
            "max_grad_norm": mech.get("max_grad_norm", 1.0),
            "delta": float(plan["delta"]),
            "epsilon_inf_baseline": bool(plan.get("baseline", False)),
            "mechanism": name,
            # the plan's public N (a DP count, or declared public) times q: never the true N
            "expected_batch": float(mech["sample_rate"]) * float(plan["n_albums"]),
        }
        for key in ("grad_sample_mode", "album_reduction", "physical_batch_rows"):
            if privacy_params is not None and key in privacy_params:
                values[key] = privacy_params[key]
        values.update(overrides)
        if values["max_grad_norm"] in (None, "auto"):
            raise ValueError(f"{name}: the plan's C is 'auto': pass max_grad_norm (tuned on public "
                             "data, see privacy.finetune)")
        values["max_grad_norm"] = float(values["max_grad_norm"])
        return cls(**values)


@dataclass
class DPTrainResult:
    """What a DP-SGD run did; ``ledger_record(name)`` is what ``charge`` takes."""

    model: nn.Module
    steps_taken: int  # steps accounted: every step this mechanism ever ran, lost ones included
    sample_rate: float
    noise_multiplier: float
    epsilon_so_far: float  # PLD at ``delta`` over ``accountant_history``; inf for the baseline
    delta: float
    max_grad_norm: float
    accountant_history: list[tuple[float, float, int]]
    history: list[dict[str, Any]] = field(default_factory=list)  # internal: losses are not DP
    completed: bool = True
    baseline: bool = False

    def ledger_record(self, name: str) -> dict[str, Any]:
        """This run as a ledger mechanism record (steps actually taken, resumes included)."""
        return {
            "name": name,
            "kind": "dpsgd",
            "noise_multiplier": 0.0 if self.baseline else self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps_taken,
            "max_grad_norm": self.max_grad_norm,
            "l2_sensitivity": self.max_grad_norm,  # of one album's clipped gradient
        }


def _check_mode(config: DPSGDConfig) -> None:
    if config.grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise ValueError(f"grad_sample_mode {config.grad_sample_mode!r} must be one of "
                         f"{GRAD_SAMPLE_MODES}")
    if config.noise_multiplier <= 0 and not config.epsilon_inf_baseline:
        raise ValueError("noise_multiplier 0 is only allowed with epsilon_inf_baseline=True")


def _make_optimizer(config: DPSGDConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    kinds = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    if config.optimizer not in kinds:
        raise ValueError(f"optimizer must be one of {sorted(kinds)}")
    return kinds[config.optimizer](params, lr=config.lr, weight_decay=config.weight_decay)


def _all_reduce_sum(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Sum ``tensors`` over all ranks in one flat all-reduce (no-op outside a process group)."""
    if current_shard().world == 1:
        return list(tensors)
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view_as(t).to(t.dtype))
        start += t.numel()
    return out


def _sync_parameters(model: nn.Module) -> None:
    """Every rank starts from rank 0's weights (Opacus' DPDDP broadcast)."""
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel

    DifferentiallyPrivateDistributedDataParallel(model)  # broadcasts every parameter from rank 0
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, 0)


class StepJournal:
    """``steps_started.json`` beside the checkpoint: written before every step, so a run killed
    between checkpoints still tells how many steps it started (each one a Gaussian release)."""

    NAME = "steps_started.json"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = os.path.join(os.fspath(directory), self.NAME)

    def started(self) -> int:
        """Steps started by every run on this checkpoint directory so far (0 if none)."""
        try:
            with open(self.path) as f:
                return int(json.load(f)["steps_started"])
        except FileNotFoundError:
            return 0

    def start(self, step: int) -> None:
        """Record that step ``step`` (1-based) is about to run (atomic replace)."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"steps_started": int(step), "internal": True}, f)
        os.replace(tmp, self.path)


def _fingerprint(config: DPSGDConfig, n_albums: int, q: float) -> dict[str, Any]:
    """What must not change across a resume (the accounting and the sampling depend on it)."""
    return {"noise_multiplier": float(config.noise_multiplier), "sample_rate": q,
            "max_grad_norm": float(config.max_grad_norm), "n_albums": n_albums,
            "album_reduction": config.album_reduction,
            "baseline": bool(config.epsilon_inf_baseline)}


def private_step(
    wrapped: nn.Module,
    params: Sequence[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    batch_albums: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch: float,
    noise_generator: np.random.Generator,
    physical_batch_rows: int,
    album_reduction: str,
    device: torch.device,
) -> dict[str, float]:
    """One album-level DP-SGD step on a sampled batch; returns internal (non-DP) statistics.

    In a process group, ``batch_albums`` are this rank's sampled albums; rank 0 adds the noise
    and the noisy sum is all-reduced, so every rank takes the same step.
    """
    # ghost: album norms from the layers' activations and output gradients (ghost_clipping.py)
    summed = ghost_clipped_album_sum if isinstance(wrapped, GhostClipper) else clipped_album_sum
    sums, stats = summed(
        wrapped, params, batch_albums, row_loss, collate, max_grad_norm=max_grad_norm,
        physical_batch_rows=physical_batch_rows, album_reduction=album_reduction, device=device,
    )
    if current_shard().is_main:  # N(0, σ²C²) once per step, whatever the number of ranks
        std = noise_multiplier * max_grad_norm
        sums = [total + gaussian_tensor(noise_generator, p.shape, std, device, total.dtype)
                for p, total in zip(params, sums)]
    counts = torch.tensor([stats.loss_sum, stats.n_albums, stats.n_clipped], device=device)
    *sums, counts = _all_reduce_sum([*sums, counts])
    for p, noisy in zip(params, sums):
        # Sum of clipped album gradients + N(0, σ²C²), over the public expected batch qN.
        p.grad = (noisy / expected_batch).to(p.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, n_albums, n_clipped = counts.tolist()
    return {"loss": loss_sum / max(n_albums, 1), "clipped_fraction": n_clipped / max(n_albums, 1)}


def nonprivate_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_albums: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    expected_batch: float,
    physical_batch_rows: int,
    album_reduction: str,
    device: torch.device,
) -> dict[str, float]:
    """NON-PRIVATE step with DP-SGD's sampling and scaling, without clipping or noise."""
    flat = [(rows, row) for rows in batch_albums for row in rows]
    loss_sum = 0.0
    for start in range(0, len(flat), physical_batch_rows):
        chunk = flat[start : start + physical_batch_rows]
        batch = to_device(collate([row for _, row in chunk]), device)
        losses = row_loss(model, batch)  # (n,)
        w = torch.tensor([1.0 / len(rows) if album_reduction == "mean" else 1.0
                          for rows, _ in chunk], device=losses.device, dtype=losses.dtype)
        loss = (losses * w).sum()
        (loss / expected_batch).backward()
        loss_sum += float(loss.detach())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    counts = torch.tensor([loss_sum, len(batch_albums)], device=device)
    *grads, counts = _all_reduce_sum([*grads, counts])  # the ranks' albums, summed
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, n_albums = counts.tolist()
    return {"loss": loss_sum / max(n_albums, 1)}


def train_dp(
    model: nn.Module,
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    config: DPSGDConfig,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    on_epoch: Callable[[dict[str, float], int], None] | None = None,
) -> DPTrainResult:
    """Train ``model``'s trainable parameters with album-level DP-SGD.

    ``albums_rows[i]``: the rows (photos / captions / summaries) of album i; ``collate(rows)``
    builds a model batch; ``row_loss(model, batch)`` returns one loss per row, shape (n_rows,),
    and must not mix rows (no batch norm). For LoRA, build the peft model on its final device
    (or pass ``config.device``) before calling: the model is moved before Opacus wraps it.
    ``stop_after``: leave after that many steps in total (a checkpoint is written; call again to
    resume). ``on_epoch(metrics, step)``: called about every 1/q steps with ε so far (never with
    losses: they are computed on private data without noise).
    """
    _check_mode(config)
    shard = current_shard()
    if shard.world > 1 and config.checkpoint_dir:
        raise ValueError("checkpoint/resume is not supported for multi-process DP-SGD yet (each "
                         "rank's sampler state would need its own file): set checkpoint_dir to "
                         "null or train on one process")
    n_albums = len(albums_rows)
    q = config.resolved_sample_rate(n_albums)
    # divide by the public expected batch (the plan's q·N); never by the actual batch or true N
    expected_batch = config.expected_batch if config.expected_batch else q * n_albums
    baseline = config.epsilon_inf_baseline
    if baseline:
        logger.warning(
            "NON-PRIVATE BASELINE (epsilon: inf): DP-SGD runs WITHOUT clipping and WITHOUT noise; "
            "its ledger entry has noise_multiplier 0 and ε = inf. Never release this model."
        )
    if config.device is not None:
        model.to(config.device)  # before any hook is registered (opacus #820, peft #3409)
    device = next(model.parameters()).device
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    params = [p for _, p in named]
    if shard.world > 1:
        _sync_parameters(model)
    model.train()
    wrapped, guards = (model, []) if baseline else wrap_for_dp(model, config.grad_sample_mode)
    optimizer = _make_optimizer(config, params)
    source, name = config.noise_source, config.mechanism
    # The mechanism's own streams (a fresh CSPRNG key each in secure mode; per rank: no shared
    # seed between processes). Only rank 0's noise stream is ever used.
    sampler = PoissonAlbumSampler(n_albums, q, source.stream(name, "sampling", shard.rank),
                                  shard.rank, shard.world)
    noise_gen = source.stream(name, "noise", shard.rank)
    torch.manual_seed(int(config.public_seed) + shard.rank)  # dropout etc.: public, not DP
    fingerprint = _fingerprint(config, n_albums, q)
    step, history, acc_history = 0, [], []
    journal = StepJournal(config.checkpoint_dir) if config.checkpoint_dir else None
    if config.checkpoint_dir and config.resume:
        state = load_checkpoint(config.checkpoint_dir)
        if state is not None:
            if state["fingerprint"] != fingerprint:
                raise ValueError(f"checkpoint in {config.checkpoint_dir} was written for "
                                 f"{state['fingerprint']}, not {fingerprint}; refusing to resume")
            with torch.no_grad():
                for n, p in named:
                    p.copy_(state["trainable"][n].to(p.device))
            optimizer.load_state_dict(state["optimizer"])
            set_global_rng_state(state["global_rng"])
            step, history = int(state["step"]), list(state["history"])
            acc_history = [tuple(h) for h in state["accountant_history"]]
            if source.replayable:  # the same draws again: re-done steps release nothing new
                sampler.load_state_dict(state["sampler"])
                restore_checkpoint_state(noise_gen, state["noise_generator"])
            else:  # fresh keys: steps started after the checkpoint and lost are counted anyway
                lost = journal.started() - sum(int(t) for _, _, t in acc_history)
                if lost > 0:
                    acc_history.append((0.0 if baseline else float(config.noise_multiplier),
                                        q, lost))
                    logger.warning("%s: %d DP-SGD steps ran after the last checkpoint and were "
                                   "lost; they are charged again (secure noise is not replayed)",
                                   name, lost)
            logger.info("resumed DP-SGD %s from step %d (%s)", name, step, config.checkpoint_dir)

    def checkpoint() -> None:
        if config.checkpoint_dir:
            replay = ({"sampler": sampler.state_dict(),
                       "noise_generator": state_for_checkpoint(noise_gen)}
                      if source.replayable else {})  # a secure key is never written anywhere
            save_checkpoint(config.checkpoint_dir, {
                "step": step, "trainable": {n: p.detach().cpu() for n, p in named},
                "optimizer": optimizer.state_dict(), "global_rng": global_rng_state(),
                "accountant_history": [list(h) for h in acc_history], "history": history,
                "fingerprint": fingerprint, **replay,
            })

    running_eps = RunningRdpEpsilon(config.delta)
    sigma = 0.0 if baseline else float(config.noise_multiplier)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    epoch_len = max(1, round(1 / q))
    bar = tqdm(total=config.steps, initial=step, disable=not progress or not shard.is_main,
               desc="DP-SGD", unit="step")
    try:
        while step < end:
            if journal is not None:
                # every step ever started (lost ones included), on disk before it draws anything
                journal.start(sum(int(t) for _, _, t in acc_history) + 1)
            batch_albums = [albums_rows[i] for i in sampler.sample()]
            record: dict[str, Any] = {"step": step + 1, "batch_albums": len(batch_albums),
                                      "batch_rows": sum(len(rows) for rows in batch_albums)}
            if shard.world > 1:  # this rank's share: the step's totals over all ranks
                record["batch_albums"], record["batch_rows"] = (int(v) for v in _all_reduce_sum(
                    [torch.tensor([record["batch_albums"], record["batch_rows"]])])[0].tolist())
            shared = {"physical_batch_rows": config.physical_batch_rows, "device": device,
                      "album_reduction": config.album_reduction, "expected_batch": expected_batch}
            if baseline:
                record.update(nonprivate_step(wrapped, optimizer, batch_albums, row_loss,
                                              collate, **shared))
            else:
                record.update(private_step(
                    wrapped, params, optimizer, batch_albums, row_loss, collate,
                    noise_multiplier=sigma, max_grad_norm=config.max_grad_norm,
                    noise_generator=noise_gen, **shared,
                ))
            step += 1
            if acc_history and acc_history[-1][:2] == (sigma, q):
                acc_history[-1] = (sigma, q, acc_history[-1][2] + 1)
            else:
                acc_history.append((sigma, q, 1))
            history.append(record)
            bar.update(1)
            bar.set_postfix({"eps<=": f"{running_eps(acc_history):.3g}"})
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            if on_epoch is not None and step % epoch_len == 0:
                on_epoch({"dp_epsilon": _epsilon(acc_history, config.delta),
                          "dp_epoch": step / epoch_len}, step)
        checkpoint()
    finally:
        bar.close()
        if not baseline:
            unwrap_dp(wrapped, guards)
    return DPTrainResult(
        model=model, steps_taken=sum(int(t) for _, _, t in acc_history), sample_rate=q,
        noise_multiplier=sigma,
        epsilon_so_far=_epsilon(acc_history, config.delta), delta=config.delta,
        max_grad_norm=float(config.max_grad_norm), accountant_history=acc_history,
        history=history, completed=step >= config.steps, baseline=baseline,
    )


def _epsilon(acc_history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """PLD ε of the steps taken so far (same grid as the ledger)."""
    if not acc_history:
        return 0.0
    if any(s <= 0 for s, _, _ in acc_history):
        return math.inf
    return pld_epsilon(dpsgd_history_records(acc_history), delta,
                       discretization=SEARCH_DISCRETIZATION)
