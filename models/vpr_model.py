"""VPRModel: the LightningModule that trains a VPRNet by metric learning and evaluates it by recall@K."""
import warnings
from pathlib import Path
from typing import Literal, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor

from dataloaders.preprocessing import Preprocessing
from dataloaders.transforms import prepare_images
from utils.distributed import all_gather_with_grad, gather_by_index, world_size
from utils.errors import ConfigError
from utils.files import atomic_write_text
from utils.losses import LOSSES, MINERS, get_loss, get_miner
from utils.recall import DEFAULT_K, check_k, format_recall_table
from utils.search import Searcher

from .aggregators import AGGREGATOR_NAMES
from .backbones import BACKBONE_NAMES
from .backbones.checkpointing import enable_activation_checkpointing
from .distillation import DistillationConfig, Teacher, build_distill_loss
from .evaluation import benchmark_title, evaluation_recalls, markdown_table, protocol_lines
from .helper import feature_map_shape
from .inference import check_descriptors
from .loading import PREPROCESSING_KEY, load_weights
from .network import build_network

# the model prepares its batches on purpose (VPRDataModule defines no transfer hook): not worth a warning
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer` in `LightningModule` but have passed")

# logged with every validation of a fit (and the untrained baseline, 0): the epochs trained before it
EPOCHS_TRAINED = "epochs_trained"
OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
LR_SCHEDULES = ("step", "linear")

BackboneName = Literal[BACKBONE_NAMES]
AggregatorName = Literal[AGGREGATOR_NAMES]
LossName = Literal[tuple(sorted(LOSSES))]
MinerName = Literal[tuple(sorted(MINERS)) + ("none",)]


class VPRModel(L.LightningModule):
    """Visual place recognition model and its training recipe.

    The network (``self.net``, a ``VPRNet``) is ``backbone`` (a cropped CNN or a ViT) followed by
    ``aggregator`` (MixVPR, GeM, BoQ ...). The state_dict holds these two and nothing else, so the
    authors' released MixVPR weights load strictly. Training: P places x K images per batch, a metric
    learning loss with an optional miner, linear warm-up over steps then a step decay by epoch (the
    paper's) or a linear decay by step (SALAD's).

    Several processes (DDP): with ``global_loss`` (None: on when there is more than one process) the
    descriptors and labels of all processes are gathered with their gradients and the miner and loss
    run on the whole step's batch, so N processes x P/N places give the gradient of one process x P.

    Args:
        backbone_arch: backbone name (ResNets, lightweight CNNs, DINOv2 ViTs).
        pretrained: start from the backbone's published weights (ImageNet, DINOv2). They are loaded
            when training starts, not at construction, and not when resuming from a checkpoint.
        layers_to_freeze: CNNs: -1 trains all, 0 freezes the stem, k the stem and stages 1..k.
        layers_to_crop: CNNs: trailing stages removed, e.g. [4] (ResNet50: 1024 channels at stride 16).
        agg_arch: aggregator name.
        agg_config: aggregator settings; its input dimensions (in_channels, in_h, in_w) are derived from
            the backbone and image_size when left out, and checked when given.
        lr: base learning rate.
        optimizer: sgd, adamw or adam.
        weight_decay: weight decay of the optimizer.
        momentum: SGD momentum.
        warmup_steps: optimizer steps of linear warm-up from lr / warmup_steps to lr.
        milestones: epochs at which the learning rate is multiplied by lr_mult (lr_schedule step).
        lr_mult: the factor applied at each milestone.
        loss_name: a pytorch-metric-learning loss class name (paper: MultiSimilarityLoss).
        miner_name: a pytorch-metric-learning miner class name, or none.
        miner_margin: deprecated (the original MixVPR keyword): the miner's epsilon/margin; use miner_config.
        faiss_gpu: run the recall@K search on the GPU (needs faiss-gpu).
        search: how validation and test search the database (``utils.search.Searcher``: a faiss
            index_factory string such as ``IVF1024,PQ32`` or ``HNSW32``, its params, a memory budget);
            None: exact search, the reference of paper tables. Whitening is learned by eval.py/retrieve.py.
        image_size: (height, width) for training and evaluation; None: in_h/in_w of agg_config times the
            backbone's stride (as the original constructor), else 320 x 320 (DINOv2: 322 x 322).
        backbone_config: options of backbones that take more (DINOv2: num_trainable_blocks,
            return_token, norm_layer).
        backbone_lr_mult: the backbone's learning rate is lr x backbone_lr_mult.
        lr_schedule: the decay, whose factor multiplies the warm-up's: ``step`` multiplies the learning rate
            by lr_mult at each milestone epoch (MixVPR, BoQ); ``linear`` scales it per optimizer step from
            1.0x down to lr_end_factor over the first lr_decay_steps steps, then keeps it there (SALAD: 0.2
            over 4000, no warm-up), and takes no milestones.
        lr_end_factor: lr_schedule linear: the final factor, 0..1.
        lr_decay_steps: lr_schedule linear: optimizer steps of the decay.
        loss_config: extra arguments of the loss (a distance or reducer by class name, e.g.
            ``{distance: CosineSimilarity}``, or as ``{class_path: ..., init_args: {...}}``).
        miner_config: extra arguments of the miner (as loss_config).
        recall_k: the K of recall@K computed at evaluation.
        keep_eval_descriptors: keep the last evaluation's descriptors per set in ``eval_descriptors``
            (memory: 1.5 GB for Pitts250k at 4096-d); recalls are always kept in ``eval_recalls``.
        distillation: knowledge distillation from a frozen teacher (see ``DistillationConfig``).
        init_from: start training from these weights (one of our checkpoints, or a release of MixVPR,
            Lightweight-MixVPR, BoQ or SALAD; loaded strictly when training starts, instead of pretrained):
            fine-tuning with new settings, where --ckpt_path would resume the old run.
        warmpup_steps: deprecated spelling of warmup_steps (the original MixVPR keyword).
        global_loss: under DDP, mine and compute the loss on the descriptors of all processes gathered
            with their gradients (None: on when there are several processes; false: per process).
        channels_last: store images, activations and convolution weights channels-last (faster
            convolutions on CPUs and tensor cores; same results to rounding).
        activation_checkpointing: recompute the CNN backbone stages' activations during backward instead
            of keeping them (less memory, one more forward pass; same results).
    """

    def __init__(
        self,
        backbone_arch: BackboneName = "resnet50",
        pretrained: bool = False,
        layers_to_freeze: int = 2,
        layers_to_crop: Sequence[int] = (4,),
        agg_arch: AggregatorName = "MixVPR",
        agg_config: Optional[dict] = None,
        lr: float = 0.05,
        optimizer: Literal["sgd", "adamw", "adam"] = "sgd",
        weight_decay: float = 1e-3,
        momentum: float = 0.9,
        warmup_steps: int = 650,
        milestones: Sequence[int] = (5, 10, 15, 25, 45),
        lr_mult: float = 0.3,
        loss_name: LossName = "MultiSimilarityLoss",
        miner_name: Optional[MinerName] = "MultiSimilarityMiner",
        miner_margin: Optional[float] = None,
        faiss_gpu: bool = False,
        image_size: Optional[tuple[int, int]] = None,
        backbone_config: Optional[dict] = None,
        backbone_lr_mult: float = 1.0,
        lr_schedule: Literal[LR_SCHEDULES] = "step",
        lr_end_factor: float = 0.2,
        lr_decay_steps: int = 4000,
        loss_config: Optional[dict] = None,
        miner_config: Optional[dict] = None,
        recall_k: Sequence[int] = DEFAULT_K,
        keep_eval_descriptors: bool = False,
        distillation: Optional[DistillationConfig] = None,
        init_from: Optional[str] = None,
        warmpup_steps: Optional[int] = None,
        global_loss: Optional[bool] = None,
        channels_last: bool = False,
        activation_checkpointing: bool = False,
        search: Optional[Searcher] = None,
    ):
        super().__init__()
        if warmpup_steps is not None:
            warnings.warn("warmpup_steps is deprecated: use warmup_steps", FutureWarning, stacklevel=2)
            warmup_steps = warmpup_steps
        miner_config = dict(miner_config or {})
        if miner_margin is not None:
            warnings.warn("miner_margin is deprecated: use miner_config (e.g. {'epsilon': 0.1})", FutureWarning,
                          stacklevel=2)
            miner_config.setdefault("margin" if miner_name == "TripletMarginMiner" else "epsilon", miner_margin)
        if str(optimizer).lower() not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if warmup_steps < 0 or lr <= 0 or lr_mult <= 0 or backbone_lr_mult < 0:
            raise ConfigError(f"lr={lr}, lr_mult={lr_mult} must be positive, warmup_steps={warmup_steps} and "
                              f"backbone_lr_mult={backbone_lr_mult} not negative")
        if lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {lr_schedule!r}; choose one of {list(LR_SCHEDULES)}")
        if lr_schedule == "linear" and (milestones or lr_decay_steps < 1 or not 0 <= lr_end_factor <= 1):
            raise ConfigError(
                f"lr_schedule 'linear' decays by step from 1.0x to lr_end_factor over lr_decay_steps steps: it needs "
                f"lr_decay_steps >= 1 (got {lr_decay_steps}) and 0 <= lr_end_factor <= 1 (got {lr_end_factor}), and "
                f"takes no milestones (got {list(milestones)}: set milestones to [])")
        check_k(recall_k, "recall_k")
        if isinstance(search, dict):  # as stored in a checkpoint's hyper-parameters
            search = Searcher(**search)
        if search is not None and search.whitening:
            raise ConfigError(f"model.search.whitening {search.whitening!r}: PCA whitening is learned on a training set "
                              f"by eval.py and retrieve.py (--search.whitening); validation searches without it")
        net = build_network(backbone_arch, False, layers_to_freeze, layers_to_crop, agg_arch, agg_config,
                            image_size, backbone_config)
        if isinstance(distillation, dict):
            distillation = DistillationConfig(**distillation)
        self.save_hyperparameters(ignore=["warmpup_steps", "miner_margin", "distillation", "search"])
        # the canonical values: derived image size, aliases resolved, distillation as a plain dict
        self.hparams.update(image_size=list(net.image_size), warmup_steps=warmup_steps, miner_config=miner_config,
                            distillation=distillation.as_dict() if distillation else None,
                            search=search.as_dict() if search is not None else None)
        # the network's modules are this module's children (state_dict keys backbone.*, aggregator.*);
        # ``net`` itself is not registered, so nothing appears twice
        self.backbone = net.backbone
        self.aggregator = net.aggregator
        self.__dict__["net"] = net
        if activation_checkpointing:
            enable_activation_checkpointing(self.backbone)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.loss_fn = get_loss(loss_name, **(loss_config or {}))
        self.miner = get_miner(miner_name, **miner_config)
        # distillation: the frozen teacher (a plain attribute, outside the state_dict, optimizer and DDP) is
        # loaded when training starts; the loss module once the teacher's descriptor size is known
        self.distillation = distillation
        self.searcher = search or Searcher()
        self.teacher: Optional[Teacher] = None
        # initial weights (init_from / pretrained): None, then pending (setup), loaded or restored (a checkpoint)
        self._initial_weights: Optional[str] = None
        self.distill_loss_fn: Optional[torch.nn.Module] = None
        self._eval_outputs: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self.eval_descriptors: dict[str, np.ndarray] = {}
        self.eval_recalls: dict[str, dict[int, float]] = {}

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) the network is trained and evaluated at."""
        return self.net.image_size

    @property
    def descriptor_dim(self) -> int:
        """Length of the descriptor."""
        return self.net.descriptor_dim

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, descriptor_dim) L2-normalised descriptors."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def train(self, mode: bool = True) -> "VPRModel":
        """As nn.Module.train; ``net`` (not a registered child) follows, so ``net.training`` is right."""
        super().train(mode)
        self.net.training = mode
        return self

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Before the first step: the initial weights (``init_from`` or the backbone's pretrained ones; not
        when resuming, which restores trained ones) and, for training, the distillation teacher."""
        self.net.preprocessing = self.eval_preprocessing()
        self.check_eval_image_size()
        # the initial weights load once the Trainer has restored any checkpoint (which cancels them, in
        # on_load_checkpoint): in setup, Lightning has not set trainer.ckpt_path yet, and a resumed run on an
        # offline node must not fetch weights (or read an init_from file) that the checkpoint overwrites
        if self._initial_weights is None and (self.hparams.init_from or (self.hparams.pretrained and stage == "fit")):
            self._initial_weights = "pending"
        if stage != "fit":
            return
        if self.distillation is not None:
            cfg = self.distillation
            self.teacher = Teacher.from_checkpoint(cfg.teacher_checkpoint, cfg.teacher_precision,
                                                   **(cfg.teacher_config or {}))
            if self.distill_loss_fn is None:
                self._build_distill_loss(self.teacher.descriptor_dim)

    def _build_distill_loss(self, teacher_dim: int) -> None:
        cfg = self.distillation
        self.distill_loss_fn = build_distill_loss(cfg.loss, self.descriptor_dim, teacher_dim, **(cfg.loss_config or {}))

    def eval_preprocessing(self):
        """The evaluation preprocessing of this model: the network's, at the datamodule's eval_image_size
        when a trainer with a datamodule is attached (what validation feeds it)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return self.net.preprocessing.with_size(getattr(datamodule, "eval_image_size", None))

    @torch.no_grad()
    def check_eval_image_size(self) -> None:
        """ConfigError, before any training step, when the evaluation images (data.eval_image_size) do not fit
        the network: one forward pass of a zero image at that size in eval mode (nothing learnt changes)."""
        size = tuple(self.net.preprocessing.image_size)
        if size == tuple(self.image_size):
            return  # the size the network was built and checked for
        was_training = self.net.training
        self.net.eval()
        param = next(self.net.parameters())
        try:
            feature_map_shape(self.net.backbone, size)
            self.net(torch.zeros(1, 3, *size, dtype=param.dtype, device=param.device))
        except (ValueError, RuntimeError, AssertionError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(
                f"--data.eval_image_size {list(size)} does not fit the model built for {list(self.image_size)} "
                f"({self.hparams.backbone_arch} + {self.hparams.agg_arch}): {first}. Validation would fail after "
                f"the first epoch: leave eval_image_size unset (the training size) or give one the aggregator "
                f"takes") from None
        finally:
            self.net.train(was_training)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every checkpoint records the evaluation preprocessing (size, resize policy, mean/std) that validation
        used, so eval.py, retrieve.py, export and load_model evaluate it as it was validated."""
        checkpoint[PREPROCESSING_KEY] = self.eval_preprocessing().as_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """The checkpoint's evaluation preprocessing becomes the network's; a distilled checkpoint's loss
        module (e.g. the projection head) is rebuilt before its weights load."""
        self._initial_weights = "restored"  # the checkpoint's weights replace any initial ones
        if checkpoint.get(PREPROCESSING_KEY) is not None:
            self.net.preprocessing = Preprocessing.from_dict(checkpoint[PREPROCESSING_KEY])
        if self.distillation is not None and self.distill_loss_fn is None:
            projection = checkpoint["state_dict"].get("distill_loss_fn.proj.weight")
            self._build_distill_loss(projection.shape[0] if projection is not None else 0)

    def load_initial_weights(self) -> None:
        """``init_from``'s weights, else the backbone's pretrained ones, unless a checkpoint was restored; once.
        Loaded in place (parameters keep their identity), so the optimizer and DDP built around them hold."""
        if self._initial_weights != "pending":
            return
        self._initial_weights = "loaded"
        if self.hparams.init_from:
            load_weights(self, self.hparams.init_from)
        else:
            self.net.load_pretrained()

    def on_fit_start(self):
        # after the Trainer restored a checkpoint (single process and DDP restore before this hook)
        self.load_initial_weights()
        if self.teacher is not None:
            self.teacher.to(self.device)

    def on_validation_start(self):
        self.load_initial_weights()  # validate/test without a checkpoint: the init_from weights

    def on_test_start(self):
        self.load_initial_weights()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Images arrive as uint8 (or as file bytes, with data.decode_on=gpu): normalise on the device."""
        if isinstance(batch, (list, tuple)) and len(batch) > 0:
            # in the weights' dtype (float64 with precision 64-true, bf16 with bf16-true; autocast does the rest)
            return [prepare_images(batch[0], self.device).to(self.dtype), *batch[1:]]
        return batch

    # ---------------------------------------------------------------- training
    def metric_loss(self, descriptors: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        """Loss of a batch and the share of its samples the miner kept as non-trivial (1.0 without miner)."""
        # half-precision descriptors (mixed precision) in float32; float64 stays float64
        descriptors = descriptors.to(torch.promote_types(descriptors.dtype, torch.float32))
        if self.miner is None:
            return self.loss_fn(descriptors, labels), 1.0
        mined = self.miner(descriptors, labels)
        nontrivial = torch.unique(mined[0]).numel() / descriptors.shape[0]
        return self.loss_fn(descriptors, labels, mined), nontrivial

    def training_step(self, batch, batch_idx):
        """Embed P places x K images and return the metric-learning loss over place labels."""
        places, labels = batch[0], batch[1]  # batch[2]: files skipped as unreadable (SkippedImages records them)
        p, k = places.shape[:2]
        images = places.flatten(0, 1)
        descriptors, labels = self(images), labels.flatten()
        teacher = self.teacher(images) if self.teacher is not None else None
        if self.uses_global_loss():
            # one loss over the step's batch of all processes (the miner's b_acc too)
            descriptors, labels = all_gather_with_grad(descriptors), all_gather_with_grad(labels)
            teacher = all_gather_with_grad(teacher) if teacher is not None else None
        loss, nontrivial = self.metric_loss(descriptors, labels)
        if teacher is not None:
            distill = self.distill_loss_fn(descriptors, teacher)
            self.log("distill_loss", distill, prog_bar=True, batch_size=p * k)
            loss = loss + self.distillation.weight * distill
        self.log("loss", loss, prog_bar=True, batch_size=p * k)
        # the original project's b_acc: share of samples the miner found nothing to learn from
        self.log("b_acc", 1.0 - nontrivial, prog_bar=True, batch_size=p * k)
        self.log("nontrivial", nontrivial, batch_size=p * k)
        return loss

    def uses_global_loss(self) -> bool:
        """Whether the loss runs on the batch gathered from all processes (``global_loss``, None: if several)."""
        several = world_size() > 1
        return several if self.hparams.global_loss is None else bool(self.hparams.global_loss) and several

    def configure_optimizers(self):
        """The optimizer (backbone at lr x backbone_lr_mult) with two schedules, whose factors multiply: a
        linear warm-up stepped per optimizer step, and lr_schedule's decay: x lr_mult at each milestone,
        stepped per epoch (step), or from 1.0x to lr_end_factor over the first lr_decay_steps optimizer
        steps, stepped per step (linear)."""
        hp = self.hparams
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        groups = [g for g in ({"params": backbone, "lr": hp.lr * hp.backbone_lr_mult}, {"params": rest, "lr": hp.lr})
                  if g["params"]]
        kwargs = {"lr": hp.lr, "weight_decay": hp.weight_decay}
        if hp.optimizer.lower() == "sgd":
            kwargs["momentum"] = hp.momentum
        optimizer = OPTIMIZERS[hp.optimizer.lower()](groups, **kwargs)
        schedules = []
        if hp.warmup_steps > 1:
            # factor (step + 1) / warmup_steps at optimizer step ``step``, 1 from warmup_steps - 1 on
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / hp.warmup_steps,
                                                       end_factor=1.0, total_iters=hp.warmup_steps - 1)
            schedules.append({"scheduler": warmup, "interval": "step", "name": "warmup"})
        if hp.lr_schedule == "linear":
            decay = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=hp.lr_end_factor,
                                                      total_iters=hp.lr_decay_steps)
            schedules.append({"scheduler": decay, "interval": "step", "name": "lr"})
        else:
            decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(hp.milestones), gamma=hp.lr_mult)
            schedules.append({"scheduler": decay, "interval": "epoch", "name": "lr"})
        return [optimizer], schedules

    # ---------------------------------------------------------------- evaluation
    def _eval_step(self, batch, dataloader_idx: int) -> None:
        images, indices = batch[0], batch[1]
        descriptors = self(images).float().detach()
        # whether each image was read (data.skip_unreadable gives unreadable ones a stand-in), kept by index:
        # unreadable images are known, not guessed from NaN rows (a NaN of the model is an error)
        readable = (batch[2].to(descriptors.device).bool() if len(batch) > 2
                    else torch.ones(len(descriptors), dtype=torch.bool, device=descriptors.device))
        self._eval_outputs.setdefault(dataloader_idx, []).append((indices, descriptors, readable))

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Embed a batch of an evaluation set and keep the descriptors by dataset index."""
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """As validation_step."""
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self):
        """Recall@K per evaluation set, from the descriptors of all processes."""
        self._eval_epoch_end(self.trainer.val_dataloaders)

    def on_test_epoch_end(self):
        """Recall@K per test set."""
        self._eval_epoch_end(self.trainer.test_dataloaders)

    def _eval_epoch_end(self, dataloaders) -> None:
        outputs, self._eval_outputs = self._eval_outputs, {}
        # a sanity check over part of the sets says nothing; over all of it (num_sanity_val_steps=-1)
        # it is the untrained model's recall, printed as the baseline (Lightning discards its logs)
        before_training = self.trainer.sanity_checking
        if before_training and self.trainer.num_sanity_val_steps != float("inf"):
            return
        if not isinstance(dataloaders, (list, tuple)):
            dataloaders = [dataloaders]
        tested, protocols, baseline = {}, {}, {}
        for i, loader in enumerate(dataloaders):
            dataset = loader.dataset
            parts = outputs.get(i, [])
            indices = torch.cat([o[0] for o in parts]) if parts else torch.zeros(0, dtype=torch.long)
            local = (torch.cat([o[1] for o in parts]) if parts
                     else torch.zeros(0, self.descriptor_dim, device=self.device))
            # uint8, not bool: what every collective backend gathers
            read = (torch.cat([o[2] for o in parts]).to(torch.uint8) if parts
                    else torch.zeros(0, dtype=torch.uint8, device=self.device))
            descriptors = gather_by_index(indices.to(self.device), local, len(dataset)).cpu().numpy()
            unreadable = np.flatnonzero(gather_by_index(indices.to(self.device), read, len(dataset)).cpu().numpy() == 0)
            descriptors[unreadable] = np.nan  # stand-in images: their rows mean nothing
            ckpt_path = self.trainer.ckpt_path
            model = (f"the checkpoint {ckpt_path}" if ckpt_path and self.trainer.state.fn != "fit"
                     else f"the model being trained (epoch {self.current_epoch + 1})")
            check_descriptors(descriptors, unreadable, self.net, f"{dataset.name}: {model}", dataset.images,
                              str(self.trainer.precision))
            recalls = self.evaluate_descriptors(descriptors, dataset, unreadable)
            name = dataset.name
            if before_training:
                self._report_start(name, recalls, baseline)
                continue
            self.eval_recalls[name] = recalls
            if self.hparams.keep_eval_descriptors:
                self.eval_descriptors[name] = descriptors
            for k in (1, 5, 10):
                if k in recalls:
                    # every process holds the same recall: no reduction, logged once (not per dataloader)
                    self.log(f"{name}/R{k}", recalls[k], add_dataloader_idx=False, rank_zero_only=False)
            if self.trainer.state.fn == "fit":
                # the x axis of the recall curves (utils.plot_metrics): 0 is the untrained baseline
                self.log(EPOCHS_TRAINED, float(self.current_epoch + 1), add_dataloader_idx=False, rank_zero_only=False)
            title = f"{name} after epoch {self.current_epoch + 1}" if self.trainer.state.fn == "fit" else name
            self.print("\n" + format_recall_table(recalls, title) + "\n")
            tested[name] = recalls
            protocols[name] = dataset.without(unreadable).protocol if len(unreadable) else dataset.protocol
        if baseline:
            # one row of metrics.csv for every set, at step 0 (Lightning keeps no logs of a sanity check)
            for logger in self.trainer.loggers:
                logger.log_metrics({**baseline, EPOCHS_TRAINED: 0.0}, step=self.trainer.global_step)
        if self.trainer.state.fn == "test" and tested:
            self._report_test(tested, protocols)

    def _report_start(self, name: str, recalls: dict[int, float], baseline: dict[str, float]) -> None:
        """The recall of the validation before the first training step (the full sanity check), printed. A new
        run's is the untrained baseline: added to ``baseline``, which is written to the loggers (metrics.csv,
        TensorBoard) with ``epochs_trained`` 0 so that the curves start from it. A resumed run's is the
        checkpoint's recall, already in the run it came from: printed only, and said to be the checkpoint's."""
        if self.trainer.ckpt_path:
            title = f"{name} when resuming from {self.trainer.ckpt_path} (step {self.trainer.global_step})"
        else:
            title = f"{name} before training"
            baseline.update({f"{name}/R{k}": recalls[k] for k in (1, 5, 10) if k in recalls})
        self.print("\n" + format_recall_table(recalls, title) + "\n")

    def evaluated_model(self) -> str:
        """What a validate or test run evaluated, as tables name it: the checkpoint, else the weights of
        ``init_from``, else an untrained model."""
        if self.trainer.ckpt_path:
            return str(self.trainer.ckpt_path)
        if self.hparams.init_from:
            return f"{self.hparams.init_from} (init_from)"
        return f"untrained {self.hparams.backbone_arch} + {self.hparams.agg_arch} (random init)"

    def _report_test(self, recalls: dict[str, dict[int, float]], protocols: dict[str, dict]) -> None:
        """The paper-style table of a test run (R@1/5/10 per test set) with each set's protocol (positives,
        counts: ``EvalDataset.protocol`` of what was evaluated), printed and written to its folder."""
        results = {self.evaluated_model(): {"descriptor_dim": self.descriptor_dim, "benchmarks": {
            name: {"recall": {str(k): v for k, v in r.items()}} for name, r in recalls.items()}}}
        datamodule = getattr(self.trainer, "datamodule", None)
        synthetic = bool(getattr(datamodule, "hparams", {}).get("synthetic", False))
        titles = {n: benchmark_title(n, synthetic) for n in recalls}
        size = self.net.preprocessing.image_size
        table = "\n".join([markdown_table(results, list(recalls), titles=titles), "",
                           f"Recall@K (%), {self.evaluation_searcher().describe()}. Image size (H x W): "
                           f"{size[0]}x{size[1]}.",
                           *protocol_lines(protocols, titles)])
        self.print("\n" + table + "\n")
        if self.trainer.is_global_zero and self.trainer.log_dir:
            atomic_write_text(Path(self.trainer.log_dir) / "recalls.md", table + "\n")

    def evaluate_descriptors(self, descriptors: np.ndarray, dataset, unreadable=()) -> dict[int, float]:
        """Recall@K of an evaluation set (database first, then queries) from its descriptors; the images at
        ``unreadable`` are left out as eval.py leaves them out (``models.evaluation.evaluation_recalls``)."""
        return evaluation_recalls(descriptors, dataset, self.hparams.recall_k, self.hparams.faiss_gpu, unreadable,
                                  self.evaluation_searcher())[0]

    def evaluation_searcher(self) -> Searcher:
        """The search of validation and test: ``search`` (exact by default), on the GPU with ``faiss_gpu``."""
        if self.hparams.faiss_gpu and not self.searcher.faiss_gpu:
            return Searcher(**{**self.searcher.as_dict(), "faiss_gpu": True})
        return self.searcher
