"""VPRModel: backbone -> aggregator -> L2-normalised global descriptor, trained by metric learning."""
from bisect import bisect_right
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from utils.distributed import all_gather_with_grad, gather_by_index, world_size
from utils.losses import get_loss, get_miner
from utils.recall import DEFAULT_K, format_recall_table, get_validation_recalls

from . import helper
from .backbones.checkpointing import enable_activation_checkpointing
from .distillation import Teacher, build_distill_loss

print_on_rank_zero = rank_zero_only(print)

OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


class VPRModel(L.LightningModule):
    """Visual place recognition model and its training recipe.

    The model is ``backbone`` (a cropped CNN) followed by ``aggregator`` (MixVPR, GeM, ...); the
    state_dict holds nothing else, so the authors' released MixVPR weights load strictly.
    ``image_size`` (height, width) is the training/evaluation size; it fixes the aggregator's input
    dimensions where they are not given. Training: P places x K images per batch, metric-learning
    loss with an optional miner, linear warm-up then a step decay by epoch.

    Knowledge distillation: with ``teacher_checkpoint`` a frozen trained VPRModel embeds the same
    batch and the loss becomes metric loss + ``distill_weight`` x ``distill_loss`` (``similarity``:
    the batch's cosine-similarity matrices, any descriptor sizes; ``projection``: a learned map to the
    teacher's space). The teacher is not part of the student's state_dict or optimizer. A bare
    state_dict teacher (e.g. the authors' released weights) takes its architecture from ``teacher_config``
    (backbone_arch, layers_to_crop, agg_arch, agg_config, image_size).

    Several processes (DDP): with ``global_loss`` (None: on when there is more than one process) the
    descriptors and labels of all processes are gathered with their gradients and the miner and loss
    run on the whole step's batch, so N processes x P/N places give the gradient of one process x P.
    Memory and speed: ``channels_last`` stores images, activations and conv weights channels-last
    (faster convolutions on CPUs and tensor cores); ``activation_checkpointing`` recomputes the
    backbone stages' activations during backward instead of keeping them. Neither changes the results
    beyond rounding; precision (``bf16-mixed``, ``16-mixed``) is the Trainer's.
    """

    def __init__(
        self,
        backbone_arch: str = "resnet50",
        pretrained: bool = False,
        layers_to_freeze: int = 2,
        layers_to_crop: Sequence[int] = (4,),
        agg_arch: str = "MixVPR",
        agg_config: Optional[dict] = None,
        image_size: tuple[int, int] = (320, 320),
        lr: float = 0.05,
        optimizer: str = "sgd",
        weight_decay: float = 1e-3,
        momentum: float = 0.9,
        warmup_steps: int = 650,
        milestones: Sequence[int] = (5, 10, 15, 25, 45),
        lr_mult: float = 0.3,
        loss_name: str = "MultiSimilarityLoss",
        loss_config: Optional[dict] = None,
        miner_name: Optional[str] = "MultiSimilarityMiner",
        miner_config: Optional[dict] = None,
        recall_k: Sequence[int] = DEFAULT_K,
        faiss_gpu: bool = False,
        teacher_checkpoint: Optional[str] = None,
        teacher_config: Optional[dict] = None,
        distill_loss: str = "similarity",
        distill_weight: float = 1.0,
        distill_config: Optional[dict] = None,
        teacher_precision: Optional[str] = None,
        global_loss: Optional[bool] = None,
        channels_last: bool = False,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        self.image_size = tuple(image_size)
        self.backbone = helper.get_backbone(backbone_arch, pretrained, layers_to_freeze, layers_to_crop)
        self.aggregator = helper.get_aggregator(agg_arch, agg_config or {}, self.backbone, self.image_size,
                                                backbone_arch)
        self.descriptor_dim = self.aggregator.out_dim
        if activation_checkpointing:
            enable_activation_checkpointing(self.backbone)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.loss_fn = get_loss(loss_name, **(loss_config or {}))
        self.miner = get_miner(miner_name, **(miner_config or {}))
        # a plain attribute (Teacher is not an nn.Module): outside the state_dict, optimizer and DDP
        self.teacher = (Teacher.from_checkpoint(teacher_checkpoint, teacher_precision, **(teacher_config or {}))
                        if teacher_checkpoint else None)
        self.distill_loss_fn = (build_distill_loss(distill_loss, self.descriptor_dim, self.teacher.descriptor_dim,
                                                   **(distill_config or {})) if self.teacher is not None else None)
        self._eval_outputs: dict[int, list[tuple[Tensor, Tensor]]] = {}
        # descriptors of the last evaluation, per set name, in dataset order (database then queries)
        self.eval_descriptors: dict[str, np.ndarray] = {}
        self.eval_recalls: dict[str, dict[int, float]] = {}

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, descriptor_dim) L2-normalised descriptors."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.aggregator(self.backbone(x))

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
        places, labels = batch
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
            loss = loss + self.hparams.distill_weight * distill
        self.log("loss", loss, prog_bar=True, batch_size=p * k)
        # the original project's b_acc: share of samples the miner found nothing to learn from
        self.log("b_acc", 1.0 - nontrivial, prog_bar=True, batch_size=p * k)
        self.log("nontrivial", nontrivial, batch_size=p * k)
        return loss

    def uses_global_loss(self) -> bool:
        """Whether the loss runs on the batch gathered from all processes (``global_loss``, None: if several)."""
        several = world_size() > 1
        return several if self.hparams.global_loss is None else bool(self.hparams.global_loss) and several

    def on_fit_start(self):
        if self.teacher is not None:
            self.teacher.to(self.device)

    def configure_optimizers(self):
        """The optimizer from the config and one per-step schedule: warm-up, then x lr_mult at each milestone epoch."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        kwargs = {"lr": hp.lr, "weight_decay": hp.weight_decay}
        if hp.optimizer.lower() == "sgd":
            kwargs["momentum"] = hp.momentum
        optimizer = OPTIMIZERS[hp.optimizer.lower()](params, **kwargs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimizer step ``step`` of the current epoch's schedule."""
        warmup = min(1.0, (step + 1) / self.hparams.warmup_steps) if self.hparams.warmup_steps > 0 else 1.0
        epoch = self.trainer.current_epoch if self._trainer is not None else 0
        return warmup * self.hparams.lr_mult ** bisect_right(sorted(self.hparams.milestones), epoch)

    def on_train_epoch_start(self):
        # the per-step schedule was last evaluated during the previous epoch: apply this epoch's decay now
        for scheduler_config in self.trainer.lr_scheduler_configs:
            scheduler = scheduler_config.scheduler
            for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base_lr * self.lr_factor(scheduler.last_epoch)

    # ---------------------------------------------------------------- evaluation
    def _eval_step(self, batch, dataloader_idx: int) -> None:
        images, indices = batch
        descriptors = self(images).float().detach()
        self._eval_outputs.setdefault(dataloader_idx, []).append((indices, descriptors))

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
        for i, loader in enumerate(dataloaders):
            dataset = loader.dataset
            indices = torch.cat([o[0] for o in outputs.get(i, [])]) if i in outputs else torch.zeros(0, dtype=torch.long)
            local = torch.cat([o[1] for o in outputs[i]]) if i in outputs else torch.zeros(0, self.descriptor_dim, device=self.device)
            descriptors = gather_by_index(indices.to(self.device), local, len(dataset)).cpu().numpy()
            recalls = self.evaluate_descriptors(descriptors, dataset)
            name = dataset.name
            if before_training:
                print_on_rank_zero("\n" + format_recall_table(recalls, f"{name} before training") + "\n")
                continue
            self.eval_descriptors[name], self.eval_recalls[name] = descriptors, recalls
            for k in (1, 5, 10):
                if k in recalls:
                    self.log(f"{name}/R{k}", recalls[k], sync_dist=False, rank_zero_only=False)
            title = f"{name} after epoch {self.current_epoch + 1}" if self.trainer.state.fn == "fit" else name
            print_on_rank_zero("\n" + format_recall_table(recalls, title) + "\n")

    def evaluate_descriptors(self, descriptors: np.ndarray, dataset) -> dict[int, float]:
        """Recall@K of an evaluation set (database first, then queries) from its descriptors."""
        r_list = descriptors[: dataset.num_references]
        q_list = descriptors[dataset.num_references:]
        return get_validation_recalls(r_list, q_list, self.hparams.recall_k, dataset.ground_truth,
                                      print_results=False, faiss_gpu=self.hparams.faiss_gpu,
                                      dataset_name=dataset.name)
