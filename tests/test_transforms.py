"""The uint8 data path: the pixels of the original float pipeline, on the CPU and on the device path."""
import lightning as L
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms.autoaugment import _apply_op

from dataloaders.datamodule import VPRDataModule, default_num_workers
from dataloaders.eval import build_eval_set
from dataloaders.gsv_cities import GSVCitiesDataset, collate_places
from dataloaders.image_io import decode_rgb, read_bytes
from utils.images import load_image
from dataloaders.rand_augment import (OPS, SIGNED, _apply_op_batch, apply_op, augment_batch, draw_ops,
                                      draw_ops_like_torchvision, magnitudes)
from dataloaders.synthetic import SYNTHETIC_CITIES
from dataloaders.transforms import (EncodedCollate, EvalTransform, TrainTransform, eval_transform, normalize_batch,
                                    resize_uint8, train_transform)
from main import VPRModel

GEOMETRIC = {"ShearX", "ShearY", "Rotate"}
STD_255 = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255  # normalised units -> grey levels


def gsv_images(synthetic, n: int = 12) -> list:
    return sorted((synthetic["gsv_cities"] / "Images").rglob("*.jpg"))[:n]


def test_rand_augment_table_is_torchvision_s():
    space = T.RandAugment()._augmentation_space(31, (48, 64))
    assert tuple(space) == OPS
    ours = magnitudes(48, 64)
    for op, (values, signed) in space.items():
        assert ours[op] == (float(values[9]) if values.ndim > 0 else 0.0), op
        assert (op in SIGNED) == signed, op


def test_decode_and_resize_give_pil_pixels(synthetic):
    """Decoding is exact; resizing is PIL's antialiased bilinear filter, rounded differently in a few pixels."""
    for path in gsv_images(synthetic, 6):
        pil = load_image(path)
        decoded = decode_rgb(read_bytes(path), path)
        assert torch.equal(decoded, T.functional.pil_to_tensor(pil))
        for size in ((32, 32), (48, 64), (80, 100)):
            expected = T.functional.pil_to_tensor(pil.resize(size[::-1], Image.BILINEAR)).int()
            diff = (resize_uint8(decoded, size).int() - expected).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.02, size


def test_normalize_batch_is_to_tensor_then_normalize(synthetic):
    pil = load_image(gsv_images(synthetic, 1)[0])
    reference = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(T.ToTensor()(pil))
    assert torch.equal(normalize_batch(T.functional.pil_to_tensor(pil)), reference)


@pytest.mark.parametrize("op", OPS)
def test_cpu_operations_give_torchvision_s_pil_pixels(synthetic, op):
    """Exact, except shear and rotation (OpenCV's bilinear weights): a rare pixel one grey level off."""
    images = [load_image(p).resize((64, 48), Image.BILINEAR) for p in gsv_images(synthetic, 4)]
    table = magnitudes(48, 64)
    for sign in (1.0, -1.0) if op in SIGNED else (1.0,):
        for img in images:
            expected = np.asarray(_apply_op(img, op, sign * table[op], T.InterpolationMode.BILINEAR, None)).astype(int)
            ours = apply_op(np.asarray(img), op, sign * table[op]).astype(int)
            diff = np.abs(ours - expected)
            assert diff.max() <= (1 if op in GEOMETRIC else 0) and (diff > 0).mean() < 0.01, (op, sign)


def test_cpu_path_draws_as_torchvision_and_matches_the_original_pipeline(synthetic):
    """Under one seed the new path picks torchvision's operations (same generator use): from the same
    resized image it gives torchvision's RandAugment pixels exactly unless shear/rotation was drawn, and
    from the file, the original float pipeline's images within a grey level on average."""
    paths = gsv_images(synthetic, 8)
    old = train_transform((48, 64), 3)
    old_augment = T.Compose(old.transforms[1:])  # RandAugment, ToTensor, Normalize
    new = TrainTransform((48, 64), 3)
    diffs, means = [], []
    for seed in range(48):
        path = paths[seed % len(paths)]
        decoded = decode_rgb(read_bytes(path), path)
        torch.manual_seed(seed)
        b, after_new = normalize_batch(new(decoded)), torch.rand(1)
        torch.manual_seed(seed)
        a, after_old = old_augment(T.functional.to_pil_image(resize_uint8(decoded, (48, 64)))), torch.rand(1)
        torch.manual_seed(seed)
        drawn = {OPS[op] for op, _ in draw_ops_like_torchvision(3)}
        assert after_old == after_new  # the generator advanced by the same draws
        if not drawn & GEOMETRIC:
            assert torch.equal(a, b), drawn
        torch.manual_seed(seed)
        levels = (old(load_image(path)) - b) * STD_255
        diffs.append(levels.abs().mean().item())
        means.append(levels.mean().item())
    assert max(diffs) < 8.0 and np.mean(diffs) < 1.0
    assert abs(np.mean(means)) < 0.5  # no brightness shift over the sample


def test_draw_ops_is_uniform_over_operations_with_fair_signs():
    ops, signs = draw_ops(14_000, 3, torch.Generator().manual_seed(0))
    counts = torch.bincount(ops.flatten(), minlength=len(OPS)).double()
    assert (counts - 3000).abs().max() < 5 * 3000 ** 0.5
    signed = torch.tensor([OPS[o] in SIGNED for o in ops.flatten().tolist()]).view_as(ops)
    assert (signs[~signed] == 1).all()
    assert abs((signs[signed] < 0).double().mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("op", OPS)
def test_device_path_matches_cpu_path_under_the_same_choices(synthetic, op):
    """augment_batch (torchvision's tensor ops, grouped) on CPU tensors against the per-image CPU path:
    within a grey level; shear/rotation also differ on the one-pixel rim of the warped area (torch blends
    it with black, PIL and the CPU path do not), without a shift of the mean."""
    images = [np.asarray(load_image(p).resize((64, 48), Image.BILINEAR)) for p in gsv_images(synthetic, 6)]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    index = OPS.index(op)
    ops = torch.full((len(images), 1), index)
    signs = torch.tensor([[1.0], [-1.0]] * 3) if op in SIGNED else torch.ones(len(images), 1)
    table = magnitudes(48, 64)
    device = augment_batch(batch, ops, signs, table).permute(0, 2, 3, 1).numpy().astype(int)
    cpu = np.stack([apply_op(img, op, float(s) * table[op]) for img, s in zip(images, signs[:, 0])]).astype(int)
    diff = np.abs(device - cpu)
    if op in GEOMETRIC:
        assert (diff > 1).mean() < 0.05 and abs((device - cpu)[diff <= 1].mean()) < 0.05
    else:
        assert diff.max() <= 1


def test_augment_batch_applies_each_image_its_own_operations(synthetic):
    images = [np.asarray(load_image(p).resize((64, 48), Image.BILINEAR)) for p in gsv_images(synthetic, 4)]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    ops = torch.tensor([[OPS.index("Identity"), OPS.index("Posterize")], [OPS.index("Solarize"), OPS.index("Identity")],
                        [OPS.index("Posterize"), OPS.index("Solarize")], [0, 0]])
    out = augment_batch(batch, ops, torch.ones(4, 2))
    table = magnitudes(48, 64)
    for i in range(4):
        expected = batch[i:i + 1]
        for op in ops[i].tolist():
            expected = _apply_op_batch(expected, OPS[op], table[OPS[op]])
        assert torch.equal(out[i:i + 1], expected)
    assert torch.equal(out[3], batch[3])


def test_encoded_items_decode_to_the_cpu_path_pixels(synthetic):
    root = synthetic["gsv_cities"]
    cpu = GSVCitiesDataset(root, SYNTHETIC_CITIES[:1], transform=TrainTransform((32, 32), 0))
    encoded = GSVCitiesDataset(root, SYNTHETIC_CITIES[:1], encoded=True)
    torch.manual_seed(0)
    expected = default_collate([cpu[i] for i in range(3)])
    torch.manual_seed(0)
    batch = EncodedCollate((32, 32), 0)([encoded[i] for i in range(3)])
    images = batch[0].decode("cpu")
    assert images.shape == (3, 4, 3, 32, 32) and torch.equal(images, expected[0])
    assert torch.equal(batch[1], expected[1])
    augmented = EncodedCollate((32, 32), 3)([encoded[i] for i in range(3)])[0].decode("cpu")
    assert augmented.shape == (3, 4, 3, 32, 32) and augmented.dtype == torch.uint8
    with pytest.raises(ValueError, match="encoded items hold the files' bytes"):
        GSVCitiesDataset(root, SYNTHETIC_CITIES[:1], transform=TrainTransform((32, 32)), encoded=True)


def test_eval_descriptors_of_uint8_and_device_paths_equal_the_float_path(synthetic):
    torch.manual_seed(0)
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR", image_size=(32, 32),
                     agg_config={"out_channels": 16, "out_rows": 2}).eval()
    ds = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]}, EvalTransform((32, 32)))
    indices = list(range(0, len(ds), max(1, len(ds) // 16)))
    reference = torch.stack([eval_transform((32, 32))(load_image(ds.images[i])) for i in indices])
    uint8_batch = default_collate([ds[i] for i in indices])
    ds.encoded = True
    encoded_batch = EncodedCollate((32, 32))([ds[i] for i in indices])
    with torch.no_grad():
        expected = model(reference)
        for batch in (uint8_batch, encoded_batch):
            images, got_indices, readable = model.on_after_batch_transfer(batch, 0)
            assert got_indices.tolist() == indices and bool(readable.all())
            # resizing may round a few pixels one grey level away from PIL: descriptors agree to 1e-4
            torch.testing.assert_close(model(images), expected, atol=1e-4, rtol=0)


def test_gpu_decoding_mode_feeds_training_and_validation(synthetic):
    """decode_on=gpu through Lightning's batch transfer (the bytes stay on the CPU for the decoder)."""
    dm = VPRDataModule(gsv_root=str(synthetic["gsv_cities"]), cities=SYNTHETIC_CITIES[:1], batch_size=3,
                       image_size=(32, 32), num_workers=0, decode_on="gpu", val_sets=["pitts30k_val"],
                       pitts_root=str(synthetic["pitts"]))
    seen = []

    class Recording(VPRModel):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            batch = super().on_after_batch_transfer(batch, dataloader_idx)
            seen.append((self.trainer.state.stage, tuple(batch[0].shape), batch[0].dtype))
            return batch

    model = Recording(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), miner_name="none")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    assert seen[0] == ("train", (3, 4, 3, 32, 32), torch.float32)
    assert all(stage == "validate" and shape[1:] == (3, 32, 32) and dtype == torch.float32
               for stage, shape, dtype in seen[1:]) and len(seen) > 1
    assert "pitts30k_val" in model.eval_recalls
    with pytest.raises(ValueError, match="unknown decode_on 'tpu'"):
        VPRDataModule(decode_on="tpu")


def test_default_workers_share_the_cpus_among_the_node_s_processes(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert default_num_workers(1) == 15 and default_num_workers(8) == 1 and default_num_workers(16) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert default_num_workers(1) == 1 and default_num_workers(2) == 0


def test_dataloader_batches_are_uint8(synthetic):
    ds = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES[:1], transform=TrainTransform((32, 32), 3))
    images, labels, skipped = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate_places)))
    assert images.dtype == torch.uint8 and images.shape == (2, 4, 3, 32, 32) and images.is_contiguous()
    assert labels.shape == (2, 4) and skipped.numel() == 0
