"""Memory and speed options change how the model computes, not what: channels_last, activation
checkpointing and bf16 autocast against the plain model."""
import numpy as np
import torch

from main import VPRModel, main
from tiny_cli import tiny_cli_args

TINY = dict(backbone_arch="resnet18", layers_to_freeze=0, layers_to_crop=[4], agg_arch="MixVPR",
            agg_config={"out_channels": 16, "mix_depth": 1, "out_rows": 2}, image_size=(32, 32))


def step(model: VPRModel, images: torch.Tensor, labels: torch.Tensor):
    """Training-mode forward and backward: (descriptors, loss, {name: grad}, batch-norm running stats)."""
    model.train().zero_grad()
    descriptors = model(images)
    loss, _ = model.metric_loss(descriptors, labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    stats = {n: b.clone() for n, b in model.named_buffers()}
    return descriptors.detach(), loss.detach(), grads, stats


def twins(**option) -> tuple[VPRModel, VPRModel]:
    """The plain tiny model and one with ``option``, with the same weights."""
    torch.manual_seed(0)
    plain = VPRModel(**TINY)
    other = VPRModel(**TINY, **option)
    other.load_state_dict(plain.state_dict())
    assert list(other.state_dict()) == list(plain.state_dict())  # the options add and rename nothing
    return plain, other


def batch():
    torch.manual_seed(1)
    return torch.randn(16, 3, 32, 32), torch.arange(4).repeat_interleave(4)


def test_channels_last_gives_the_same_descriptors_loss_and_gradients():
    plain, fast = twins(channels_last=True)
    assert fast.backbone.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, labels = batch()
    torch.testing.assert_close(step(fast, images, labels)[0], step(plain, images, labels)[0], rtol=1e-4, atol=1e-5)
    # the same arithmetic in another order: in float64 equal to rounding (in float32 the sharp
    # multi-similarity loss, beta = 50, amplifies the kernels' different rounding to ~1e-3 in some gradients)
    a, b = step(plain.double(), images.double(), labels), step(fast.double(), images.double(), labels)
    torch.testing.assert_close(b[1], a[1], rtol=1e-12, atol=1e-12)
    for name, grad in a[2].items():
        torch.testing.assert_close(b[2][name], grad, rtol=1e-9, atol=1e-12)


def test_activation_checkpointing_keeps_less_and_trains_identically():
    plain, lean = twins(activation_checkpointing=True)
    saved = {}
    for label, model in (("plain", plain), ("lean", lean)):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            saved[label] = step(model, *batch())
        saved[label + " kept"] = sum(sizes)
    assert saved["lean kept"] < 0.7 * saved["plain kept"]  # the stages' inner activations are not kept
    a, b = saved["plain"], saved["lean"]
    torch.testing.assert_close(b[0], a[0])
    torch.testing.assert_close(b[1], a[1])
    assert a[2].keys() == b[2].keys()
    for name, grad in a[2].items():
        torch.testing.assert_close(b[2][name], grad, rtol=1e-5, atol=1e-7)
    # the recomputation in backward does not update the batch-norm running statistics a second time
    for name, buffer in a[3].items():
        torch.testing.assert_close(b[3][name], buffer, rtol=0, atol=0)


def test_activation_checkpointing_of_dinov2_blocks_trains_identically(tiny_dinov2):
    from tiny_cli import tiny_vit
    settings = tiny_vit("BoQ")
    torch.manual_seed(0)
    plain = VPRModel(**settings)
    lean = VPRModel(**settings, activation_checkpointing=True)
    lean.load_state_dict(plain.state_dict())
    images = torch.randn(8, 3, *settings["image_size"])
    labels = torch.arange(2).repeat_interleave(4)
    saved = {}
    for label, model in (("plain", plain), ("lean", lean)):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            saved[label] = step(model, images, labels)
        saved[label + " kept"] = sum(sizes)
    assert saved["lean kept"] < saved["plain kept"]  # the trainable block's inner activations are not kept
    a, b = saved["plain"], saved["lean"]
    torch.testing.assert_close(b[1], a[1])
    assert a[2].keys() == b[2].keys() and any(name.startswith("backbone.") for name in a[2])
    for name, grad in a[2].items():
        torch.testing.assert_close(b[2][name], grad, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_descriptors_match_float32():
    plain = VPRModel(**TINY).eval()
    images, _ = batch()
    with torch.no_grad():
        full = plain(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = plain(images).float()
    assert torch.nn.functional.cosine_similarity(full, half).min() > 0.99


def test_fit_with_bf16_channels_last_and_checkpointing(synthetic, tmp_path):
    cli = main(tiny_cli_args(synthetic, tmp_path) + ["--model.channels_last", "true",
                                                     "--model.activation_checkpointing", "true",
                                                     "--trainer.precision", "bf16-mixed"])
    assert torch.isfinite(cli.trainer.callback_metrics["loss"])
    assert cli.trainer.global_step == 2 and cli.model.hparams.channels_last


def test_embedding_in_channels_last_gives_the_same_descriptors(synthetic):
    from models.inference import embed_paths, image_paths
    paths = image_paths(synthetic["pitts"] / "queries_real")[:6]
    model = VPRModel(**TINY)
    plain, _ = embed_paths(model, paths, batch_size=4, channels_last=False, progress=False)
    fast, _ = embed_paths(model, paths, batch_size=4, channels_last=True, progress=False)
    assert model.backbone.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(fast, plain, atol=1e-5)
