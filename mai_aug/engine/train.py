"""``mai-aug train``: one regime, one run folder, on MONAI's SupervisedTrainer and SupervisedEvaluator."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import EarlyStopHandler, StatsHandler, TensorBoardStatsHandler, ValidationHandler
from monai.utils import set_determinism
from torch.utils.tensorboard import SummaryWriter

from mai_aug.core.devices import StepOptions, resolve_amp, resolve_device, resolve_step
from mai_aug.core.errors import EngineTermination, MaiAugError, first_line
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout, checkpoint_epoch, last_checkpoint
from mai_aug.core.locks import RunLock
from mai_aug.core.logs import FILE_ONLY, RunLog
from mai_aug.core.preflight import require_writable_folder
from mai_aug.core.threads import use_threads
from mai_aug.data.images import check_images_if_asked
from mai_aug.data.loader import build_dataset, shutdown_workers
from mai_aug.data.prepare import SplitRequest, datalist_for
from mai_aug.data.split import label_frequencies, load_datalist, split_table, write_datalist
from mai_aug.data.store import store_root
from mai_aug.data.store_build import ensure_store
from mai_aug.engine import distributed
from mai_aug.engine.checkpoint import CheckpointWriter, load_checkpoint, remove_older_checkpoints, remove_temporaries
from mai_aug.engine.handlers import CosineSchedule, FirstBatchImages, LearningRateWriter, LossTracker, MetricsTable
from mai_aug.engine.inference import PrepareBatch as PrepareBatch
from mai_aug.engine.inference import make_evaluator
from mai_aug.engine.loss import WeightedBCEWithLogits
from mai_aug.engine.metrics import MACRO_KEY, PerFindingAUC
from mai_aug.engine.precision import engine_precision
from mai_aug.engine.step import make_adam, prepare_network
from mai_aug.engine.stream import TrainingStream
from mai_aug.networks.build import LoadReport, build_network
from mai_aug.networks.spec import NetworkSpec, resolve_network, stored_network
from mai_aug.reports.roc import roc_figure
from mai_aug.settings.config import TrainConfig, config_differences, read_config, resumed_epochs, write_config
from mai_aug.settings.fingerprint import components as fingerprint_components
from mai_aug.settings.fingerprint import epochs_begun, write_fingerprint
from mai_aug.settings.schema import BY_NAME, SPLIT_SETTINGS
from mai_aug.stats.scores import resolve_metrics
from mai_aug.transforms.batched import BatchedStage, choose_stage
from mai_aug.transforms.regimes import Regime, load_regime, stored_regime

logger = logging.getLogger("mai_aug")




def check_split_settings(config: TrainConfig) -> None:
    """With ``--datalist`` (already read and split), a split setting the user gave would be silently dropped: refuse."""
    ignored = [k for k in SPLIT_SETTINGS if config.datalist and config.sources.get(k) in ("cli", "file")]
    if ignored:
        raise MaiAugError(f"`datalist` {config.datalist} is already split: {BY_NAME[ignored[0]].option} has no "
                          f"effect on it (drop it, or give `data` to read and split the dataset)")


@dataclass
class NewRun:
    """What a new run is made of, read and checked before its folder is created (nothing is written for a refusal).

    Attributes:
        datalist: the split (``--datalist`` or ``--data``), before ``--verify-images``/``--skip-bad-images``.
        report: the split's report lines, logged once the run's log is open.
        regime: the augmentation regime at the run's image size.
        network: the network resolved for the split's labels.
        net: the network built, checked on one image and maybe pretrained (:func:`initial_network`).
        weights: what ``--pretrained`` loaded into it, if anything.
    """

    datalist: dict
    report: list[str]
    regime: Regime
    network: NetworkSpec
    net: torch.nn.Module
    weights: LoadReport | None


def check_new_run(config: TrainConfig) -> NewRun | None:
    """Read and check a new run's split, regime and network (built); None for a run to resume (its folder holds them)."""
    if config.resume and RunLayout(config.run_dir).config.is_file():
        return None
    if not config.datalist and not config.data:
        raise MaiAugError("give `data` DIR or `datalist` JSON")
    report: list[str] = []
    datalist = datalist_for(SplitRequest.from_settings(vars(config)), report=report.append)
    check_config(config, datalist)
    if not config.skip_bad_images:  # header check, or --verify-images' full decode: a refusal creates no folder
        check_images_if_asked(datalist, config.verify_images, False, report.append, RunLayout(config.run_dir).bad_images,
                              progress=config.progress)
    regime = load_regime(config.regime, config.image_size, config.regimes_file)
    names = len(datalist["labels"])
    network = resolve_network(config.network, config.network_args, names, config.in_channels, config.image_size)
    return NewRun(datalist, report, regime, network, *initial_network(config, names, network))


def initial_network(config: TrainConfig, names: int, network: NetworkSpec) -> tuple[torch.nn.Module, LoadReport | None]:
    """The run's network before training, with ``names`` logits: built, checked on one image, maybe pretrained.

    Its weights depend on ``config.seed`` alone: every regime trained with a seed starts from the same weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_network(names, config.in_channels, config.pretrained, network, config.image_size)


def check_trainable(config: TrainConfig, datalist: dict) -> None:
    """Refuse what a new run of ``config`` on ``datalist`` would refuse at its start: its sizes and its network."""
    check_config(config, datalist)
    names = len(datalist["labels"])
    network = resolve_network(config.network, config.network_args, names, config.in_channels, config.image_size)
    initial_network(config, names, network)


def resolve_datalist(config: TrainConfig, run_dir: Path, new: NewRun | None, write: bool = True) -> dict:
    """The run's split: reused from the run folder on resume, else the checked new run's (images checked if asked)."""
    layout = RunLayout(run_dir)
    if new is None:
        return load_datalist(layout.datalist)
    for line in new.report:
        logger.info(line)
    datalist = new.datalist
    if config.skip_bad_images:  # a full decode of every image, the dropped ones listed in the run folder
        datalist = check_images_if_asked(datalist, config.verify_images, config.skip_bad_images, logger.info,
                                         layout.bad_images, progress=config.progress)
    if write:
        write_datalist(datalist, layout.datalist)
    return datalist


def check_config(config: TrainConfig, datalist: dict) -> None:
    """Refuse settings the split cannot train: non-positive sizes, no validation, a batch above the training split."""
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise MaiAugError("`epochs`, `batch_size` and `lr` must be positive")
    if not datalist["validation"]:
        raise MaiAugError("the validation split is empty: raise `val_frac` or add data")
    if config.batch_size > len(datalist["training"]):
        raise MaiAugError(f"`batch_size` {config.batch_size} is larger than the training split "
                          f"({len(datalist['training'])} images)")


def prepare_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    """Create the run folder; on ``--resume`` check the config and return the checkpoint to continue from."""
    run_dir = config.run_dir
    ckpt_dir = RunLayout(run_dir).checkpoints
    if config.resume:
        old = read_config(run_dir)
        diffs = config_differences(old, config)
        if diffs:
            raise MaiAugError(f"`resume` {run_dir}: the config differs from the run's: {'; '.join(diffs)}")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for folder in (run_dir, ckpt_dir):
            remove_temporaries(folder)  # left by a process killed mid-write (we hold the run's lock)
        last = last_checkpoint(ckpt_dir)
        if last is None:
            logger.info("`resume`: no checkpoint yet; starting from epoch 1")
        return run_dir, last
    if last_checkpoint(ckpt_dir) is not None:
        raise MaiAugError(f"`out` {run_dir}: already holds a run; pass `resume` to continue it or pick another folder")
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"`out` {run_dir}: cannot create ({e.strerror})") from None
    return run_dir, None


def train(config: TrainConfig, split_on_console: bool = True) -> dict[str, float]:
    """Train one regime into ``config.out``; return the last validation metrics.

    Under torchrun each rank trains on its shard with DistributedDataParallel; rank 0 alone writes the run folder.
    ``split_on_console=False`` keeps the split table in train.log only (a study prints it once for all its runs).
    """
    run_dir = Path(config.out)
    use_threads(config.threads)
    resolve_metrics(config.metrics)  # an unknown metric (a preset's, a config's) stops before anything is written
    check_split_settings(config)
    device = resolve_device(config.device)
    ctx = distributed.init(device.type)
    new = check_new_run(config)  # a bad split, regime or network is refused before the run folder exists
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"`out` {run_dir}: cannot create ({e.strerror})") from None
    if ctx.is_main:
        require_writable_folder(run_dir, "`out`")  # one line now, not a traceback at the lock file
    layout = RunLayout(run_dir)
    with RunLock(layout.lock, enabled=ctx.is_main), RunLog(layout.log, echo=config.progress, enabled=ctx.is_main):
        result = _train(config, distributed.rank_device(device, ctx), ctx, new, split_on_console)
    ctx.barrier()
    return result


@dataclass
class _Run:
    """What the setup step resolves for one run (folder, split, regime, device); every later step reads it."""

    config: TrainConfig
    device: torch.device
    ctx: distributed.DistContext
    run_dir: Path
    resume_from: Path | None
    extended: list[int]
    amp: bool
    datalist: dict
    regime: Regime
    freq_pos: np.ndarray
    stage: BatchedStage | None  # None: the regime runs per sample in the loader
    network: NetworkSpec
    net: torch.nn.Module  # built and checked on one image before any caching; seeded by config.seed alone
    weights: LoadReport | None
    step: StepOptions  # memory format, Adam's kernel, torch.compile, as resolved for the device
    started: float = field(default_factory=time.monotonic)  # this session's start, for DONE's train_seconds

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def names(self) -> list[str]:
        return list(self.datalist["labels"])

    @property
    def main(self) -> bool:
        return self.ctx.is_main


@dataclass
class _Model:
    """The network (unwrapped for checkpoints, DDP-wrapped for the engines), its loss and optimizer."""

    net: torch.nn.Module
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer


@dataclass
class _Engines:
    """MONAI's trainer and evaluator, and the handlers the last steps read."""

    trainer: SupervisedTrainer
    evaluator: SupervisedEvaluator
    auc_metric: PerFindingAUC
    losses: LossTracker
    table: MetricsTable
    checkpoints: CheckpointWriter
    writer: SummaryWriter | None


def _train(config: TrainConfig, device: torch.device, ctx: distributed.DistContext,
           new: NewRun | None, split_on_console: bool) -> dict[str, float]:
    """The steps of :func:`train` inside the run's lock and log."""
    started = time.monotonic()
    run = dataclasses.replace(_setup(config, device, ctx, new), started=started)
    _record_run(run, split_on_console)
    # the checkpoint first: an unreadable one is one clear error before the image store is built
    resume_state = load_checkpoint(run.resume_from) if run.resume_from is not None else None
    train_ds, val_ds = _datasets(run)
    epoch_length = steps_per_epoch(config, len(run.datalist["training"]), ctx.world_size)
    done = int(resume_state["trainer"]["iteration"]) if resume_state else 0
    train_loader, val_loader = _loaders(run, train_ds, val_ds, epoch_length, done)
    model = _model(run)
    tb_dir = Path(config.tensorboard_dir) if config.tensorboard_dir else run.layout.tensorboard
    writer = SummaryWriter(log_dir=str(tb_dir)) if run.main else None
    try:  # however training ends (an error, Ctrl-C, SIGTERM): no worker process or writer thread outlives it
        engines = _engines(run, model, train_loader, val_loader, epoch_length, writer)
        return _run_engines(run, engines, resume_state, done)
    finally:
        for loader in (train_loader, val_loader):
            shutdown_workers(loader)
        if writer is not None:
            writer.close()


def _run_engines(run: _Run, engines: _Engines, resume_state: dict | None, done: int) -> dict[str, float]:
    """Restore (or skip a finished run), train, check why training stopped, and on rank 0 finish the run."""
    if not _restore_or_skip(run, engines, resume_state, done):
        return {}
    _run_trainer(engines, run.resume_from)
    _check_stopped(run, engines)
    if not run.main:
        return dict(engines.auc_metric.last)
    _finish(run, engines)
    return dict(engines.auc_metric.last)


def steps_per_epoch(config: TrainConfig, n_training: int, world_size: int = 1) -> int:
    """Training steps per epoch: ``config.steps_per_epoch``, else one pass over ``n_training`` images.

    Every rank runs the same number of steps (DDP synchronises each one), whatever its shard's size.
    """
    return config.steps_per_epoch or max(1, n_training // world_size // config.batch_size)


def _setup(config: TrainConfig, device: torch.device, ctx: distributed.DistContext, new: NewRun | None) -> _Run:
    """Prepare the run folder, then resolve AMP, the split (checked) and the regime; seed everything."""
    run_dir, resume_from = prepare_run_dir(config)
    # earlier lengths of a run resumed with other --epochs after its schedule diverged (refuses fewer than trained)
    extended = (resumed_epochs(read_config(run_dir), config, checkpoint_epoch(resume_from), epochs_begun(run_dir))
                if resume_from is not None else [])
    amp = resolve_amp(config.amp, device)  # float16 autocast on CUDA, bfloat16 on CPU (engine.precision)
    step = resolve_step(config.channels_last, config.fused_adam, config.compile, device)
    set_determinism(seed=config.seed)
    datalist = resolve_datalist(config, run_dir, new, write=ctx.is_main)
    ctx.barrier()
    check_config(config, datalist)
    # on --resume, the regime as the run stored it (resolved spec in config.yaml), never a regimes file re-read
    regime = (new.regime if new is not None
              else stored_regime(read_config(run_dir), f"`resume` {run_dir}"))
    freq_pos, _ = label_frequencies(datalist["training"], len(datalist["labels"]))
    stage = choose_stage(config.augment_on, regime, device, config.seed, ctx.rank)
    names = len(datalist["labels"])
    if new is not None:
        network, net, weights = new.network, new.net, new.weights
    else:
        network = stored_network(read_config(run_dir), names, f"`resume` {run_dir}")
        net, weights = initial_network(config, names, network)
    return _Run(config, device, ctx, run_dir, resume_from, extended, amp, datalist, regime, freq_pos, stage,
                network, net, weights, step)


def _record_run(run: _Run, split_on_console: bool = True) -> None:
    """Log what runs where; on rank 0 write the run's fingerprint (its identity) and ``config.yaml``."""
    config, ctx, datalist = run.config, run.ctx, run.datalist
    logger.info(f"run {run.run_dir}: regime {run.regime.name!r} on {run.device}{' with AMP' if run.amp else ''}"
                f"{f' x {ctx.world_size} processes (DDP)' if ctx.enabled else ''}; "
                f"{len(datalist['training'])} training, {len(datalist['validation'])} validation images")
    logger.info("split:\n" + split_table(datalist).to_string(), extra=None if split_on_console else FILE_ONLY)
    params = sum(p.numel() for p in run.net.parameters())
    logger.info(f"network {run.network.name} ({run.network.target}, {params / 1e6:.1f} M parameters)"
                + (f"; {run.weights}" if run.weights else ""))
    if not run.main:
        return
    augment_on = "loader" if run.stage is None else "device"
    resolved = {"amp": run.amp, "augment_on": augment_on, **run.step.as_settings()}
    write_fingerprint(fingerprint_components(config, run.regime.spec, datalist, resolved, run.extended), run.run_dir)
    write_config(config, {
        "device": str(run.device), "amp": run.amp, "augment_on": augment_on, **run.step.as_settings(),
        "extended_from_epochs": run.extended,
        "regime": run.regime.spec, "regime_transforms": run.regime.describe(),
        "network": run.network.to_dict(), "pretrained_weights": str(run.weights) if run.weights else None,
        "findings": run.names, "train_positive_frequency": [round(float(f), 6) for f in run.freq_pos],
        "split_sizes": {k: len(datalist[k]) for k in ("training", "validation", "test")},
        "versions": _versions(), "world_size": ctx.world_size,
    }, run.layout.config)


def _datasets(run: _Run) -> tuple[Dataset, Dataset]:
    """This rank's training and validation shards, read from the image store (built first over the whole split)."""
    config = run.config
    if config.cache == "store":  # the whole datalist once, so evaluation and every shard find their images stored
        every = [it["image"] for split in ("training", "validation", "test") for it in run.datalist.get(split, [])]
        ensure_store(every, run.regime, store_root(config.cache_dir), workers=config.threads,
                     progress=config.progress, say=logger.info)
    train_items, val_items = run.ctx.shard(run.datalist["training"]), run.ctx.shard(run.datalist["validation"])
    options = {"cache": config.cache, "cache_dir": config.cache_dir, "workers": config.threads,
               "progress": config.progress}
    train_ds = build_dataset(train_items, run.regime, train=True, online=run.stage is None, **options)
    val_ds = build_dataset(val_items, run.regime, train=False, **options)
    return train_ds, val_ds


def _loaders(run: _Run, train_ds: Dataset, val_ds: Dataset, epoch_length: int,
             done: int) -> tuple[DataLoader, DataLoader]:
    """The training loader (a stream whose batches depend on seed and iteration, from ``done`` on) and validation's."""
    config, pin = run.config, run.device.type == "cuda"
    stream = TrainingStream(train_ds, config.seed, config.epochs * epoch_length * config.batch_size,
                            start=done * config.batch_size, rank=run.ctx.rank)
    train_loader = DataLoader(stream, batch_size=config.batch_size, shuffle=False, drop_last=True,
                              num_workers=config.workers, pin_memory=pin, persistent_workers=config.workers > 0)
    val_loader = DataLoader(val_ds, batch_size=config.batch_size * 2, shuffle=False, num_workers=config.workers,
                            pin_memory=pin)
    return train_loader, val_loader


def _model(run: _Run) -> _Model:
    """The run's network (DDP-wrapped under torchrun), the BCE loss and Adam."""
    config, device = run.config, run.device
    torch.manual_seed(config.seed)  # the global stream as each regime's run begins it
    net = prepare_network(run.net.to(device), run.step)
    model = net  # what the engines run; checkpoints always hold the unwrapped ``net``
    if run.ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = WeightedBCEWithLogits(run.freq_pos if config.weighted_loss else None).to(device)
    optimizer = make_adam(net.parameters(), config.lr, config.weight_decay, run.step)
    return _Model(net, model, loss_fn, optimizer)


def _engines(run: _Run, model: _Model, train_loader: DataLoader, val_loader: DataLoader, epoch_length: int,
             writer: SummaryWriter | None) -> _Engines:
    """MONAI's evaluator and trainer, with every handler attached in the order the run relies on."""
    config, device, pin = run.config, run.device, run.device.type == "cuda"
    prepare = PrepareBatch(config.in_channels, run.stage)
    auc_metric = PerFindingAUC(run.names, metrics=config.metrics)
    val_handlers = [
        StatsHandler(name="mai_aug", iteration_log=False, output_transform=lambda x: None),
        TensorBoardStatsHandler(summary_writer=writer, iteration_log=False, output_transform=lambda x: None,
                                global_epoch_transform=lambda epoch: trainer.state.epoch),
    ] if run.main else []
    evaluator = make_evaluator(model.model, val_loader, device, run.amp, config.in_channels,
                               key_val_metric={MACRO_KEY: auc_metric}, val_handlers=val_handlers)
    losses = LossTracker()
    trainer = SupervisedTrainer(
        device=device, max_epochs=config.epochs, train_data_loader=train_loader, network=model.model,
        optimizer=model.optimizer, loss_function=model.loss_fn, epoch_length=epoch_length, non_blocking=pin,
        prepare_batch=prepare, train_handlers=None, decollate=False, **engine_precision(device, run.amp),
    )
    prepare.attach(trainer)
    trainer.logger.addFilter(EngineTermination())  # the error is re-raised and said once by the caller
    losses.attach(trainer, distributed=run.ctx.enabled)  # before the other handlers, so a NaN stops the epoch before anything is saved
    table = MetricsTable(run.layout.metrics, run.names, trainer, losses, model.optimizer,
                         [m.key for m in auc_metric.extra])
    _attach_train_handlers(run, trainer, evaluator, model.optimizer, writer, epoch_length)
    if run.main:
        table.attach(evaluator)
        LearningRateWriter(writer, model.optimizer).attach(trainer)
        FirstBatchImages(writer).attach(trainer)
    checkpoints = _attach_checkpoints(run, trainer, evaluator, model, losses)
    return _Engines(trainer, evaluator, auc_metric, losses, table, checkpoints, writer)


def _attach_train_handlers(run: _Run, trainer: SupervisedTrainer, evaluator: SupervisedEvaluator,
                           optimizer: torch.optim.Optimizer, writer: SummaryWriter | None, epoch_length: int) -> None:
    """The cosine schedule and validation each epoch; on rank 0 the loss to the log and TensorBoard."""
    config = run.config
    log_every = max(1, epoch_length // 5)
    train_handlers = [
        CosineSchedule(optimizer, config.lr, config.epochs),
        ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
    ]
    train_handlers += [] if not run.main else [
        StatsHandler(name="mai_aug", tag_name="train_loss", output_transform=lambda out: out["loss"].item(),
                     iteration_log=lambda engine, event: engine.state.iteration % log_every == 0),
        TensorBoardStatsHandler(summary_writer=writer, tag_name="train/loss", epoch_log=False,
                                output_transform=lambda out: out["loss"].item()),
    ]
    for handler in train_handlers:
        handler.attach(trainer)


def _attach_checkpoints(run: _Run, trainer: SupervisedTrainer, evaluator: SupervisedEvaluator, model: _Model,
                        losses: LossTracker) -> CheckpointWriter:
    """Early stopping (if asked), the checkpoint writer (rank 0, after validation) and the progress bar."""
    config, main = run.config, run.main
    stateful: dict = {"losses": losses}
    if config.early_stop > 0:
        early = EarlyStopHandler(patience=config.early_stop, score_function=lambda e: e.state.metrics[MACRO_KEY],
                                 trainer=trainer)
        early.attach(evaluator)
        stateful["early_stop"] = early._handler  # ignite's EarlyStopping: its patience counter and best score
    checkpoints = CheckpointWriter(run.layout.checkpoints, model.net, model.optimizer, trainer, evaluator,
                                   stateful, config.checkpoint_every)
    if main:
        checkpoints.attach()  # after ValidationHandler: an epoch's checkpoint follows its validation
    if main and config.progress and sys.stderr.isatty():
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"].item()})
    return checkpoints


def _restore_or_skip(run: _Run, engines: _Engines, resume_state: dict | None, done: int) -> bool:
    """Restore a resumed run's state (or clear a fresh run's old metrics); False if it has no epoch left to train."""
    run_dir, resume_from = run.run_dir, run.resume_from
    start_epoch = checkpoint_epoch(resume_from) if resume_from is not None else 0
    if start_epoch >= run.config.epochs:
        logger.info(f"{run_dir}: already trained for {start_epoch} epochs")
        if run.main:  # killed after its last checkpoint: the older one and the missing DONE are settled now
            remove_older_checkpoints(run.layout.checkpoints, resume_from)
            if not run.layout.done.is_file():
                write_text_atomic(run.layout.done, json.dumps({"epochs": start_epoch}) + "\n")
        return False
    if resume_state is not None:
        _restore(engines.checkpoints, resume_state, resume_from)
        if run.main:
            engines.table.truncate(start_epoch)
        logger.info(f"resuming {run_dir} after epoch {start_epoch} (iteration {done}) from {resume_from.name}")
    elif run.main and run.layout.metrics.exists():
        run.layout.metrics.unlink()
    return True


def _run_trainer(engines: _Engines, resume_from: Path | None) -> None:
    """Run the trainer; a checkpoint that does not fit the network is one line naming it."""
    try:
        engines.trainer.run()
    except MaiAugError:
        raise
    except RuntimeError as e:
        if "checkpoint" in str(e).lower() or "state_dict" in str(e).lower():
            raise MaiAugError(f"cannot resume from {resume_from}: {first_line(e)}") from None
        raise
    finally:
        if engines.writer:
            engines.writer.flush()


def _check_stopped(run: _Run, engines: _Engines) -> None:
    """Raise what stopped training early: a failed checkpoint write, or a non-finite loss."""
    losses = engines.losses
    if engines.checkpoints.error is not None:
        raise engines.checkpoints.error
    if losses.nan_at is not None:
        last = run.layout.last
        kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint had been written yet"
        raise MaiAugError(f"training stopped: non-finite loss at epoch {losses.nan_at[0]}, iteration "
                          f"{losses.nan_at[1]} (try a lower `lr`); {kept}")


def _finish(run: _Run, engines: _Engines) -> None:
    """Rank 0: the validation ROC figure, hparams, then ``DONE`` and the best score in the log."""
    config, writer, trainer, evaluator = run.config, engines.writer, engines.trainer, engines.evaluator
    if engines.auc_metric.last:
        scores, labels = engines.auc_metric.last_scores
        writer.add_figure("val/roc", roc_figure(labels, scores, run.names, title=f"{run.regime.name}: validation ROC"),
                          trainer.state.epoch)
    if config.hparams:
        writer.add_hparams({"regime": run.regime.name, "seed": config.seed, "image_size": config.image_size},
                           {"hparam/val_auc_macro": float(evaluator.state.metrics.get(MACRO_KEY, np.nan))},
                           run_name=".")
    writer.close()
    write_text_atomic(run.layout.done, json.dumps(done_record(run, trainer.state.epoch)) + "\n")
    logger.info(f"finished {run.run_dir}: best validation macro AUC {evaluator.state.best_metric:.4f} "
                f"at epoch {evaluator.state.best_metric_epoch}")


def done_record(run: _Run, epochs: int) -> dict[str, object]:
    """``DONE``'s content: the epochs trained, this session's wall time (setup to the end of training), whether it
    resumed an earlier session, and the device in words (``compare``'s compute-cost table)."""
    return {"epochs": epochs, "train_seconds": round(time.monotonic() - run.started, 1),
            "resumed": run.resume_from is not None, "device": device_text(run.device, run.ctx.world_size)}


def device_text(device: torch.device, world_size: int = 1) -> str:
    """``cuda (NVIDIA H200)``, ``cpu (16 threads)``; `` × 2 processes (DDP)`` under torchrun."""
    if device.type == "cuda":
        what = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        what = f"{device.type} ({torch.get_num_threads()} threads)"
    return what + (f" \u00d7 {world_size} processes (DDP)" if world_size > 1 else "")


def _restore(checkpoints: CheckpointWriter, state: dict, path: Path) -> None:
    """Load a last checkpoint into the run, naming the file if it does not fit."""
    try:
        checkpoints.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise MaiAugError(f"cannot resume from {path}: {first_line(e)}") from None


def _versions() -> dict[str, str]:
    import monai

    import mai_aug

    return {"python": platform.python_version(), "torch": str(torch.__version__), "monai": str(monai.__version__),
            "mai_aug": mai_aug.__version__}
