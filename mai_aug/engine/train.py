"""``mai-aug train``: one regime, one run folder, on MONAI's SupervisedTrainer and SupervisedEvaluator."""

from __future__ import annotations

import json
import logging
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import EarlyStopHandler, StatsHandler, TensorBoardStatsHandler, ValidationHandler
from monai.utils import set_determinism
from torch.utils.tensorboard import SummaryWriter

from mai_aug.data.images import check_images_if_asked
from mai_aug.data.loader import build_dataset
from mai_aug.data.prepare import datalist_from_options
from mai_aug.data.split import label_frequencies, load_datalist, split_table, write_datalist
from mai_aug.engine import distributed
from mai_aug.engine.checkpoint import CheckpointWriter, atomic_write, remove_temporaries
from mai_aug.engine.config import TrainConfig, config_differences, read_config, resumed_epochs, write_config
from mai_aug.engine.fingerprint import components as fingerprint_components
from mai_aug.engine.fingerprint import epochs_begun, write_fingerprint
from mai_aug.engine.handlers import CosineSchedule, FirstBatchImages, LearningRateWriter, LossTracker, MetricsTable
from mai_aug.engine.loss import WeightedBCEWithLogits
from mai_aug.engine.metrics import MACRO_KEY, PerFindingAUC
from mai_aug.engine.network import build_network
from mai_aug.engine.preflight import require_writable_folder
from mai_aug.engine.runtime import (
    RunLock,
    RunLog,
    checkpoint_epoch,
    last_checkpoint,
    load_checkpoint,
    resolve_device,
)
from mai_aug.engine.stream import TrainingStream
from mai_aug.errors import EngineTermination, MaiAugError
from mai_aug.reports.roc import roc_figure
from mai_aug.transforms.batched import BatchedStage, choose_stage
from mai_aug.transforms.regimes import load_regime, stored_regime

logger = logging.getLogger("mai_aug")


class PrepareBatch:
    """Move a batch to the device; repeat the grayscale channel for a 3-channel (ImageNet) network.

    With a batched ``stage`` (training on the device path), the batch arrives as cached uint8 images (pinned on
    CUDA, copied non-blocking) and the stage turns it into the augmented float input on the device, with draws
    seeded by the (epoch, iteration) that :meth:`attach` records. The evaluator's PrepareBatch has no stage.
    """

    def __init__(self, in_channels: int = 1, stage: BatchedStage | None = None) -> None:
        self.in_channels, self.stage = in_channels, stage
        self.position = (0, 0)  # (epoch, iteration) of the batch being prepared

    def attach(self, engine: Engine) -> None:
        """Record each iteration's position before its batch is prepared (what seeds the stage's draws)."""
        engine.add_event_handler(Events.ITERATION_STARTED, self._record)

    def _record(self, engine: Engine) -> None:
        self.position = (engine.state.epoch, engine.state.iteration)

    def __call__(self, batch: dict, device: torch.device | None = None, non_blocking: bool = False, **kwargs):
        image = batch["image"].to(device=device, non_blocking=non_blocking)
        label = batch["label"].to(device=device, non_blocking=non_blocking)
        if self.stage is not None:
            image = self.stage(image, *self.position)
        if self.in_channels == 3 and image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        return image, label


def resolve_datalist(config: TrainConfig, run_dir: Path, write: bool = True) -> dict:
    """The run's split: reused from the run folder on resume, else from ``--datalist`` or ``--data``."""
    saved = run_dir / "datalist.json"
    if config.resume and saved.is_file():
        return load_datalist(saved)
    if not config.datalist and not config.data:
        raise MaiAugError("give --data DIR or --datalist JSON")
    datalist = datalist_from_options(config, report=logger.info)
    datalist = check_images_if_asked(datalist, config, logger.info, run_dir / "bad_images.csv", progress=config.progress)
    if write:
        write_datalist(datalist, saved)
    return datalist


def check_config(config: TrainConfig, datalist: dict) -> None:
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise MaiAugError("--epochs, --batch-size and --lr must be positive")
    if not datalist["validation"]:
        raise MaiAugError("the validation split is empty: raise --val-frac or add data")
    if config.batch_size > len(datalist["training"]):
        raise MaiAugError(f"--batch-size {config.batch_size} is larger than the training split "
                          f"({len(datalist['training'])} images)")


def prepare_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    """Create the run folder; on ``--resume`` check the config and return the checkpoint to continue from."""
    run_dir = config.run_dir
    ckpt_dir = run_dir / "checkpoints"
    if config.resume:
        old = read_config(run_dir)
        diffs = config_differences(old, config)
        if diffs:
            raise MaiAugError(f"--resume {run_dir}: the config differs from the run's: {'; '.join(diffs)}")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for folder in (run_dir, ckpt_dir):
            remove_temporaries(folder)  # left by a process killed mid-write (we hold the run's lock)
        last = last_checkpoint(ckpt_dir)
        if last is None:
            logger.info("--resume: no checkpoint yet; starting from epoch 1")
        return run_dir, last
    if last_checkpoint(ckpt_dir) is not None:
        raise MaiAugError(f"--out {run_dir}: already holds a run; pass --resume to continue it or pick another folder")
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"--out {run_dir}: cannot create ({e.strerror})") from None
    return run_dir, None


def train(config: TrainConfig) -> dict[str, float]:
    """Train one regime into ``config.out``; return the last validation metrics.

    Under torchrun each rank trains on its shard with DistributedDataParallel; rank 0 alone writes the run folder.
    """
    run_dir = Path(config.out)
    device = resolve_device(config.device)
    ctx = distributed.init(device.type)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"--out {run_dir}: cannot create ({e.strerror})") from None
    if ctx.is_main:
        require_writable_folder(run_dir, "--out")  # one line now, not a traceback at the lock file
    with RunLock(run_dir / ".lock", enabled=ctx.is_main), \
            RunLog(run_dir / "train.log", echo=config.progress, enabled=ctx.is_main):
        result = _train(config, distributed.rank_device(device, ctx), ctx)
    ctx.barrier()
    return result


def _train(config: TrainConfig, device: torch.device, ctx: distributed.DistContext) -> dict[str, float]:
    run_dir, resume_from = prepare_run_dir(config)
    # earlier lengths of a run resumed with other --epochs after its schedule diverged (refuses fewer than trained)
    extended = (resumed_epochs(read_config(run_dir), config, checkpoint_epoch(resume_from), epochs_begun(run_dir))
                if resume_from is not None else [])
    main = ctx.is_main
    amp = bool(config.amp) if config.amp is not None else device.type == "cuda"
    if amp and device.type != "cuda":
        raise MaiAugError("--amp needs a CUDA device")
    set_determinism(seed=config.seed)
    datalist = resolve_datalist(config, run_dir, write=main)
    ctx.barrier()
    check_config(config, datalist)
    names = list(datalist["labels"])
    # on --resume, the regime as the run stored it (resolved spec in config.yaml), never a regimes file re-read
    stored = config.resume and (run_dir / "config.yaml").is_file()
    regime = (stored_regime(read_config(run_dir), f"--resume {run_dir}") if stored
              else load_regime(config.regime, config.image_size, config.regimes_file))
    freq_pos, _ = label_frequencies(datalist["training"], len(names))
    stage = choose_stage(config.augment_on, regime, device, config.seed, ctx.rank)  # None: per-sample loader path
    logger.info(f"run {run_dir}: regime {regime.name!r} on {device}{' with AMP' if amp else ''}"
                f"{f' x {ctx.world_size} processes (DDP)' if ctx.enabled else ''}; "
                f"{len(datalist['training'])} training, {len(datalist['validation'])} validation images")
    logger.info("split:\n" + split_table(datalist).to_string())
    if main:
        augment_on = "loader" if stage is None else "device"
        write_fingerprint(fingerprint_components(config, regime.spec, datalist, {"amp": amp, "augment_on": augment_on},
                                                 extended), run_dir)  # the run's identity
        write_config(config, {
        "device": str(device), "amp": amp, "augment_on": augment_on, "extended_from_epochs": extended,
        "regime": regime.spec, "regime_transforms": regime.describe(),
        "findings": names, "train_positive_frequency": [round(float(f), 6) for f in freq_pos],
        "split_sizes": {k: len(datalist[k]) for k in ("training", "validation", "test")},
        "versions": _versions(), "world_size": ctx.world_size,
        }, run_dir / "config.yaml")

    cache_workers = max(config.workers, 1)
    train_items, val_items = ctx.shard(datalist["training"]), ctx.shard(datalist["validation"])
    logger.info(f"caching {len(train_items) + len(val_items)} images as uint8 at {config.image_size} px "
                f"({config.cache}); the first pass decodes each image once")
    cache_dir = Path(config.cache_dir) if config.cache_dir else run_dir / "cache"
    train_ds = build_dataset(train_items, regime, train=True, cache=config.cache, cache_dir=cache_dir,
                             workers=cache_workers, progress=config.progress, online=stage is None)
    val_ds = build_dataset(val_items, regime, train=False, cache=config.cache,
                           cache_dir=cache_dir, workers=cache_workers, progress=config.progress)
    pin = device.type == "cuda"
    # Every rank runs the same number of steps (DDP synchronises each one), whatever its shard's size.
    epoch_length = config.steps_per_epoch or max(1, len(datalist["training"]) // ctx.world_size // config.batch_size)
    resume_state = load_checkpoint(resume_from) if resume_from is not None else None  # one clear error if unreadable
    done = int(resume_state["trainer"]["iteration"]) if resume_state else 0
    stream = TrainingStream(train_ds, config.seed, config.epochs * epoch_length * config.batch_size,
                            start=done * config.batch_size, rank=ctx.rank)  # batches depend on (seed, iteration)
    train_loader = DataLoader(stream, batch_size=config.batch_size, shuffle=False, drop_last=True,
                              num_workers=config.workers, pin_memory=pin, persistent_workers=config.workers > 0)
    val_loader = DataLoader(val_ds, batch_size=config.batch_size * 2, shuffle=False, num_workers=config.workers,
                            pin_memory=pin)

    torch.manual_seed(config.seed)  # the same initial weights for every regime trained with this seed
    net, report = build_network(len(names), config.in_channels, config.pretrained)
    net = net.to(device)
    model = net  # what the engines run; checkpoints always hold the unwrapped ``net``
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = WeightedBCEWithLogits(freq_pos if config.weighted_loss else None).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    tb_dir = Path(config.tensorboard_dir) if config.tensorboard_dir else run_dir / "tensorboard"
    writer = SummaryWriter(log_dir=str(tb_dir)) if main else None
    prepare = PrepareBatch(config.in_channels, stage)
    ckpt_dir = run_dir / "checkpoints"

    auc_metric = PerFindingAUC(names)
    val_handlers = [
        StatsHandler(name="mai_aug", iteration_log=False, output_transform=lambda x: None),
        TensorBoardStatsHandler(summary_writer=writer, iteration_log=False, output_transform=lambda x: None,
                                global_epoch_transform=lambda epoch: trainer.state.epoch),
    ] if main else []
    evaluator = SupervisedEvaluator(
        device=device, val_data_loader=val_loader, network=model, non_blocking=pin,
        prepare_batch=PrepareBatch(config.in_channels),  # evaluation never runs the batched stage
        key_val_metric={MACRO_KEY: auc_metric}, val_handlers=val_handlers, amp=amp, decollate=False,
    )
    losses = LossTracker()
    log_every = max(1, epoch_length // 5)
    trainer = SupervisedTrainer(
        device=device, max_epochs=config.epochs, train_data_loader=train_loader, network=model, optimizer=optimizer,
        loss_function=loss_fn, epoch_length=epoch_length, non_blocking=pin, prepare_batch=prepare,
        train_handlers=None, amp=amp, decollate=False,
    )
    train_handlers = [
        CosineSchedule(optimizer, config.lr, config.epochs),
        ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
    ]
    train_handlers += [] if not main else [
        StatsHandler(name="mai_aug", tag_name="train_loss", output_transform=lambda out: out["loss"].item(),
                     iteration_log=lambda engine, event: engine.state.iteration % log_every == 0),
        TensorBoardStatsHandler(summary_writer=writer, tag_name="train/loss", epoch_log=False,
                                output_transform=lambda out: out["loss"].item()),
    ]
    prepare.attach(trainer)
    for engine in (trainer, evaluator):  # the error is re-raised and said once by the caller
        engine.logger.addFilter(EngineTermination())
    losses.attach(trainer, distributed=ctx.enabled)  # before the other handlers, so a NaN stops the epoch before anything is saved
    table = MetricsTable(run_dir / "metrics.csv", names, trainer, losses, optimizer)
    for handler in train_handlers:
        handler.attach(trainer)
    if main:
        table.attach(evaluator)
        LearningRateWriter(writer, optimizer).attach(trainer)
        FirstBatchImages(writer).attach(trainer)
    stateful: dict = {"losses": losses}
    if config.early_stop > 0:
        early = EarlyStopHandler(patience=config.early_stop, score_function=lambda e: e.state.metrics[MACRO_KEY],
                                 trainer=trainer)
        early.attach(evaluator)
        stateful["early_stop"] = early._handler  # ignite's EarlyStopping: its patience counter and best score
    checkpoints = CheckpointWriter(ckpt_dir, net, optimizer, trainer, evaluator, stateful, config.checkpoint_every)
    if main:
        checkpoints.attach()  # after ValidationHandler: an epoch's checkpoint follows its validation
    if main and config.progress and sys.stderr.isatty():
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"].item()})

    start_epoch = checkpoint_epoch(resume_from) if resume_from is not None else 0
    if start_epoch >= config.epochs:
        logger.info(f"{run_dir}: already trained for {start_epoch} epochs")
        if writer:
            writer.close()
        return {}
    if resume_state is not None:
        _restore(checkpoints, resume_state, resume_from)
        if main:
            table.truncate(start_epoch)
        logger.info(f"resuming {run_dir} after epoch {start_epoch} (iteration {done}) from {resume_from.name}")
    elif main and (run_dir / "metrics.csv").exists():
        (run_dir / "metrics.csv").unlink()
    try:
        trainer.run()
    except MaiAugError:
        raise
    except RuntimeError as e:
        if "checkpoint" in str(e).lower() or "state_dict" in str(e).lower():
            raise MaiAugError(f"cannot resume from {resume_from}: {str(e).splitlines()[0][:300]}") from None
        raise
    finally:
        if writer:
            writer.flush()
    if checkpoints.error is not None:
        if writer:
            writer.close()
        raise checkpoints.error
    if losses.nan_at is not None:
        if writer:
            writer.close()
        last = last_checkpoint(ckpt_dir)
        kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint had been written yet"
        raise MaiAugError(f"training stopped: non-finite loss at epoch {losses.nan_at[0]}, iteration "
                          f"{losses.nan_at[1]} (try a lower --lr); {kept}")
    if not main:
        return dict(auc_metric.last)
    if auc_metric.last:
        scores, labels = auc_metric.last_scores
        writer.add_figure("val/roc", roc_figure(labels, scores, names, title=f"{regime.name}: validation ROC"),
                          trainer.state.epoch)
    if config.hparams:
        writer.add_hparams({"regime": regime.name, "seed": config.seed, "image_size": config.image_size},
                           {"hparam/val_auc_macro": float(evaluator.state.metrics.get(MACRO_KEY, np.nan))},
                           run_name=".")
    writer.close()
    atomic_write(run_dir / "DONE", lambda f: f.write((json.dumps({"epochs": trainer.state.epoch}) + "\n").encode()))
    logger.info(f"finished {run_dir}: best validation macro AUC {evaluator.state.best_metric:.4f} "
                f"at epoch {evaluator.state.best_metric_epoch}")
    return dict(auc_metric.last)


def _restore(checkpoints: CheckpointWriter, state: dict, path: Path) -> None:
    """Load a last checkpoint into the run, naming the file if it does not fit."""
    try:
        checkpoints.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise MaiAugError(f"cannot resume from {path}: {first}") from None


def _versions() -> dict[str, str]:
    import monai

    import mai_aug

    return {"python": platform.python_version(), "torch": str(torch.__version__), "monai": str(monai.__version__),
            "mai_aug": mai_aug.__version__}
