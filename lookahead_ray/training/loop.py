"""The training loop that every Ray Train worker runs: the project's only backward().

AdamW, linear warmup then cosine decay, gradient clipping and accumulation; the masked router's
mask rate is a pure function of the optimizer step. Every `eval_every` steps the loop scores the
val split (mask rate 1: no response is seen), reports `val_score` (each evaluated benchmark's
normalised score of the chosen candidate, averaged over benchmarks as the test is: the metric that
selects the checkpoint, training/selection.py) and saves a checkpoint with the optimizer
state, so that a restarted worker resumes where the last checkpoint left off.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookahead_ray.config import TrainConfig, from_dict
from lookahead_ray.curriculum import mask_rate
from lookahead_ray.routers.checkpoint import WEIGHTS_FILE, RouterSpec, build_router, load_train_state, save_router
from lookahead_ray.training.selection import SUMS, row_sums, selection_metrics

log = logging.getLogger(__name__)


def total_steps(n_train: int, cfg: TrainConfig) -> int:
    """Optimizer steps of the run: per-worker micro-batches / accumulation x epochs, capped by max_steps."""
    per_worker = max(1, n_train // cfg.num_workers)
    micro_per_epoch = -(-per_worker // cfg.batch_size)
    steps = max(1, micro_per_epoch // cfg.grad_accum) * cfg.epochs
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def step_mask_rate(cfg: TrainConfig, step: int, steps: int) -> float:
    if cfg.router != "lookahead-mlm":
        return 1.0
    c = cfg.curriculum
    return mask_rate(step, steps, r0=c.r0, warmup_ratio=c.warmup_ratio, shape=c.shape)


def collate(model: torch.nn.Module, cfg: TrainConfig, examples: list[dict], rate: float) -> dict:
    collator = model.collator()
    return collator(examples, mask_rate=rate) if cfg.router == "lookahead-mlm" else collator(examples)


def micro_loss(model: torch.nn.Module, cfg: TrainConfig, batch: dict, aux_weight: float | None = None):
    """The micro-batch loss; aux_weight (None: the config's full weight) is the ramped response-loss weight."""
    if cfg.router == "mlc":
        return model.training_loss(batch)
    return model.training_loss(batch, aux_weight=cfg.response_loss_weight if aux_weight is None else aux_weight)


def records(frame) -> list[dict[str, Any]]:
    return [
        {"prompt": p, "responses": list(r), "labels": [float(x) for x in y]}
        for p, r, y in zip(frame["prompt"], frame["responses"], frame["labels"])
    ]


def mixed_precision(device: torch.device, cpu_bf16: bool = False):
    """(autocast context factory, GradScaler or None): bf16 on a GPU that has it, else fp16 + scaler;
    on the CPU bf16 autocast when asked (`cpu_autocast`: AMX / avx512_bf16), else full precision."""
    if device.type != "cuda":
        if cpu_bf16:  # bf16 keeps fp32's exponent range: no loss scaling needed
            return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), None
        return nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, steps: int):
    """AdamW and its schedule: linear warmup over warmup_steps_ratio of `steps`, then cosine decay."""
    from transformers import get_cosine_schedule_with_warmup  # heavy: transformers only where the optimizer is built

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_steps_ratio * steps), steps)


def apply_update(model: torch.nn.Module, optimizer, scheduler, scaler, max_grad_norm: float) -> None:
    """One optimizer step from the accumulated gradients: (unscale,) clip, step, schedule, zero."""
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def weight_average(model: torch.nn.Module, cfg: TrainConfig, resumed: dict | None = None):
    """The exponential moving average of `model`'s weights (cfg.weight_ema), or None when it is off.
    `resumed` holds the averaged weights of the checkpoint a restarted run resumes from."""
    if not cfg.weight_ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # torch's own EMA, on parameters

    # use_buffers=False: the routers' buffers (position ids, rotary tables) are constants, and an
    # EMA over integer buffers would fail.
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.weight_ema), use_buffers=False)
    if resumed is not None:
        average.module.load_state_dict(resumed)
        average.n_averaged.fill_(1)  # > 0: the next update averages instead of copying the raw weights
    return average


def load_checkpoint_weights(model: torch.nn.Module, directory: str) -> tuple[dict, dict | None]:
    """Load a checkpoint into the raw model; returns (train state, averaged weights or None). With
    weight_ema the checkpoint's model.pt holds the average, and the raw weights ride in the train state."""
    weights = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    saved = load_train_state(directory)
    raw = (saved or {}).get("raw_weights")
    model.load_state_dict(raw if raw is not None else weights)
    return saved, (weights if raw is not None else None)


def average_gradients(model: torch.nn.Module) -> None:
    """Mean of the gradients over workers (plain all-reduce: the loss calls custom methods, not forward)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world == 1:
        return
    for parameter in model.parameters():
        if parameter.grad is not None:
            torch.distributed.all_reduce(parameter.grad)
            parameter.grad /= world


def all_sum(values: list[float]) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def evaluate_val(model: torch.nn.Module, shard, benchmarks: list[str], selecting: tuple[str, ...],
                 autocast=None) -> dict[str, float]:
    """Score every val row once and return `selection_metrics` (val_score selects the checkpoint).

    `benchmarks` lists every benchmark of the val set in one fixed order, so that the per-benchmark
    sums of all workers line up in the all-reduce."""
    model.eval()
    sums = {name: np.zeros(len(SUMS)) for name in benchmarks}
    for frame in shard.iter_batches(batch_size=32, batch_format="pandas"):
        with (autocast or nullcontext)():
            scores = model.score({"prompt": frame["prompt"].tolist()})  # (B, T)
        picks = scores.float().argmax(dim=1).numpy()
        names = frame["benchmark"].to_numpy()
        columns = {c: np.stack(frame[c].to_numpy()) for c in ("scores", "normalized", "labels")}  # (B, T) each
        for name in set(names):
            at = names == name  # this benchmark's rows of the batch
            sums[name] += row_sums(columns["scores"][at], columns["normalized"][at], columns["labels"][at], picks[at])
    model.train()
    flat = all_sum([value for name in benchmarks for value in sums[name]])
    width = len(SUMS)
    totals = {name: np.array(flat[i * width:(i + 1) * width]) for i, name in enumerate(benchmarks)}
    return selection_metrics(totals, selecting)


def warm_head(model: torch.nn.Module, cfg: TrainConfig, shard, device: torch.device, rank: int) -> None:
    """Fit the masked router's vocabulary head alone for cfg.head_warmup_steps steps (backbone frozen,
    no routing loss), at the curriculum's first mask rate, so that the auxiliary loss starts from a
    head that decodes the backbone rather than from a random projection. Its own AdamW: the main
    optimizer's moments and schedule stay untouched."""
    params = list(model.head_parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.head_warmup_lr)
    rate, done = step_mask_rate(cfg, 0, 1), 0
    while done < cfg.head_warmup_steps:
        for frame in shard.iter_batches(batch_size=cfg.batch_size, batch_format="pandas"):
            batch = {k: v.to(device) for k, v in collate(model, cfg, records(frame), rate).items()}
            loss = model.head_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            # every grad, not only the head's: the decoder tied to the word embeddings got one too,
            # which the main optimizer's first step must not see
            model.zero_grad(set_to_none=True)
            done += 1
            if rank == 0 and (done % 10 == 0 or done == 1):
                print(f"[train] head warm-up {done}/{cfg.head_warmup_steps}: MLM loss {loss.item():.3f}", flush=True)
            if done >= cfg.head_warmup_steps:
                return


class MlflowSink:
    """Every rank logs into the run the driver opened: rank 0 the run's metrics, each rank also its own
    micro-batch loss as `loss/rank<r>` (on a cluster, proof that every node reaches the tracking server)."""

    PER_RANK = ("loss",)

    def __init__(self, run_id: str | None, uri: str | None, rank: int) -> None:
        self.active, self.rank = run_id is not None, rank
        if self.active:
            import mlflow  # heavy: mlflow only when the run is logged

            mlflow.set_tracking_uri(uri)
            self.client = mlflow.MlflowClient(uri)
            self.run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            from mlflow.entities import Metric  # heavy: as mlflow above

            now = int(time.time() * 1000)
            rows = dict(metrics) if self.rank == 0 else {}  # eval metrics are all-reduced: one copy
            rows |= {f"{k}/rank{self.rank}": metrics[k] for k in self.PER_RANK if k in metrics}
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in rows.items()])


def maybe_crash(config: dict[str, Any], step: int) -> None:
    """Test hook: kill this worker once at `crash_once_at_step` (a marker file makes it once).

    It waits `crash_delay_s` first: Train V2's controller registers a reported checkpoint when it
    next polls the workers (every 2 s), so a crash right after a report could lose that report.
    """
    at, marker = config.get("crash_once_at_step"), config.get("crash_marker")
    if at is not None and step == at and marker and not Path(marker).exists():
        time.sleep(float(config.get("crash_delay_s", 5.0)))
        Path(marker).write_text(str(step))
        os._exit(1)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    # heavy imports: Ray Train only inside its workers
    import ray.train
    import ray.train.torch

    cfg = from_dict(TrainConfig, config["train"])
    spec = RouterSpec(**{**config["spec"], "candidates": tuple(config["spec"]["candidates"])})
    steps = int(config["total_steps"])
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(cfg.seed + rank)

    model = build_router(spec).train()
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    state, resumed_average = {"step": 0, "epoch": 0, "micro_in_epoch": 0}, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            saved, resumed_average = load_checkpoint_weights(model, directory)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["position"]
        print(f"[train] rank {rank}: resumed from step {state['step']}", flush=True)
    model = ray.train.torch.prepare_model(model, parallel_strategy=None)  # device only; grads averaged below
    device = next(model.parameters()).device
    average = weight_average(model, cfg, resumed_average)  # after prepare_model: on the model's device
    autocast, scaler = mixed_precision(device, cfg.cpu_autocast)
    sink = MlflowSink(config.get("mlflow_run_id"), config.get("mlflow_uri"), rank)
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")

    if checkpoint is None and cfg.head_warmup_steps and cfg.router == "lookahead-mlm":
        warm_head(model, cfg, train_shard, device, rank)
    interval = cfg.evaluation_interval(steps)
    val_sets = (list(config["val_benchmarks"]), tuple(config["selecting"]))
    running, micro, step = [], 0, state["step"]
    started, state_start = time.perf_counter(), state["step"]
    while step < steps:
        for index, frame in enumerate(train_shard.iter_batches(batch_size=cfg.batch_size, batch_format="pandas")):
            if index < state["micro_in_epoch"]:
                continue  # already trained on before the restart
            rate = step_mask_rate(cfg, step, steps)
            aux_weight = cfg.aux_weight_at(step, steps)  # the response-loss ramp, like the mask rate a function of the step
            batch = {k: v.to(device) for k, v in collate(model, cfg, records(frame), rate).items()}
            with autocast():
                loss = micro_loss(model, cfg, batch, aux_weight)
            scaled = loss.total / cfg.grad_accum
            (scaler.scale(scaled) if scaler else scaled).backward()
            running.append([loss.total.item(), loss.routing.item(), loss.aux.item()])
            micro += 1
            state["micro_in_epoch"] = index + 1
            if micro % cfg.grad_accum:
                continue
            average_gradients(model)
            apply_update(model, optimizer, scheduler, scaler, cfg.max_grad_norm)
            if average is not None:
                average.update_parameters(model)
            step += 1
            state["step"] = step
            total, routing, aux = np.mean(running, axis=0)
            running = []
            sink.log({"loss": total, "loss_routing": routing, "loss_response": aux, "mask_rate": rate,
                      "aux_weight": aux_weight,
                      "lr": scheduler.get_last_lr()[0]}, step)
            if rank == 0 and (step % 10 == 0 or step == 1):
                pace = (time.perf_counter() - started) / max(step - state_start, 1)
                print(f"[train] step {step}/{steps} loss {total:.4f} mask_rate {rate:.2f} "
                      f"({pace:.2f} s/step, ~{pace * (steps - step) / 60:.1f} min left)", flush=True)
            if step % interval == 0 or step == steps:
                report((model, average), spec, optimizer, scheduler, state, (val_shard, *val_sets, autocast), sink, rank,
                       step, rate)
            maybe_crash(config, step)
            if step >= steps:
                break
        state["epoch"] += 1
        state["micro_in_epoch"] = 0


def report(models, spec, optimizer, scheduler, state, val, sink, rank, step, rate) -> None:
    """Evaluate on val (`val` = shard, benchmarks, selecting sets, autocast), log, and hand Ray Train
    the metrics and (rank 0) a checkpoint. `models` is (raw model, weight average or None): the
    average, when there is one, is what is scored and saved as the router."""
    import ray.train  # heavy: Ray Train only inside its workers

    model, average = models
    scored = average.module if average is not None else model
    metrics = {**evaluate_val(scored, *val), "step": step, "mask_rate": rate}
    sink.log({k: v for k, v in metrics.items() if k != "step"}, step)
    if rank == 0:
        per_set = " ".join(f"{k[4:]} {v:.3f}" for k, v in metrics.items() if k.startswith("val_") and k[4:] in val[2])
        print(f"[train] step {step}: val_score {metrics['val_score']:.4f} ± {metrics['val_score_se']:.4f} "
              f"({per_set}) eval_label_acc {metrics['eval_label_acc']:.4f}", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "position": dict(state)}
            if average is not None:
                train_state["raw_weights"] = model.state_dict()  # the weights that train on after a resume
            save_router(scored, spec, directory, train_state)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
