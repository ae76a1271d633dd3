"""Backbones (crop/freeze/weights), aggregators and build_model. Small images, no downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from pipeline.config import ModelConfig, config_from_dict
from pipeline.errors import UserError
from pipeline.evaluation.descriptors import extract_descriptors
from pipeline.models import (
    AGGREGATORS,
    imagenet_weights,
    PretrainedWeightsMismatch,
    PretrainedWeightsNotFound,
    aggregator_defaults,
    build_aggregator,
    build_backbone,
    build_model,
    describe_output_dims,
    imagenet_weights_path,
    model_from_config,
    output_dims_markdown,
)
from pipeline.models.storage import storage_copy, stored_bytes

SIZE = (64, 64)


def _model_cfg(**fields) -> ModelConfig:
    """A validated `model:` section, random init and nothing frozen unless given (as YAML would give it)."""
    return config_from_dict({"model": {"pretrained": "none", "layers_to_freeze": 0, **fields}}).model


@pytest.fixture(autouse=True)
def _no_hub_cache(tmp_path, monkeypatch):
    # An empty TORCH_HOME per test: "imagenet" can never pick up a real cache, and nothing downloads.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


# ---------------------------------------------------------------- backbones


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
@pytest.mark.parametrize("crop, channels, stride", [([], 512, 32), ([4], 256, 16), ([3, 4], 128, 8)])
def test_backbone_channels_and_stride(name, crop, channels, stride):
    net = build_backbone(name, "none", crop)
    assert (net.out_channels, net.stride) == (channels, stride)
    out = net(torch.rand(2, 3, *SIZE))
    assert out.shape == (2, channels, SIZE[0] // stride, SIZE[1] // stride)
    assert not hasattr(net, "fc") and not hasattr(net, "avgpool")
    assert all(hasattr(net, f"layer{i}") == (i not in crop) for i in range(1, 5))


def test_resnet50_cut_after_layer3():
    net = build_backbone("resnet50", "none", [4])
    assert (net.out_channels, net.stride) == (1024, 16)
    assert net.feature_shape((96, 64)) == (1024, 6, 4)


def test_backbone_errors_list_choices():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        build_backbone("vgg16", "none")
    with pytest.raises(ValueError, match="layer4 consumes layer3"):
        build_backbone("resnet18", "none", [3])
    with pytest.raises(ValueError, match=r"layers_to_crop may only contain \[3, 4\]"):
        build_backbone("resnet18", "none", [2])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        build_backbone("resnet18", "none", [4], layers_to_freeze=4)
    with pytest.raises(ValueError, match="pretrained must be"):
        build_backbone("resnet18", "")


@pytest.fixture
def r18_weights(tmp_path) -> str:
    """A (random) torchvision-format resnet18 state dict on disk: a 'pretrained' backbone."""
    path = tmp_path / "r18.pth"
    torch.save(_random_state_dict(), path)
    return str(path)


def test_freeze_sets_requires_grad_only_when_pretrained(r18_weights):
    # GSV-Cities: level N freezes conv1+bn1 and layer1..N (level 0: the stem alone).
    for level, frozen in ((2, ("conv1.", "bn1.", "layer1.", "layer2.")), (0, ("conv1.", "bn1."))):
        net = build_backbone("resnet18", r18_weights, [], layers_to_freeze=level)
        for key, param in net.named_parameters():
            assert param.requires_grad == (not key.startswith(frozen)), (level, key)
    # A random-init backbone freezes nothing: a frozen random stem would never learn.
    assert all(p.requires_grad for p in build_backbone("resnet18", "none", [4], 2).parameters())


def _bn_step(net) -> dict[str, bool]:
    """One training forward/backward/step; which BatchNorm running means moved."""
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    net.train()
    net(torch.rand(2, 3, *SIZE) * 5 + 1).mean().backward()
    opt.step()
    after = net.state_dict()
    return {k: not torch.equal(v, after[k]) for k, v in before.items()}


def test_frozen_batchnorm_trains_by_default_and_is_fixed_in_eval_mode(r18_weights):
    moved = _bn_step(build_backbone("resnet18", r18_weights, [4], layers_to_freeze=1))
    assert moved["bn1.running_mean"] and moved["layer1.0.bn1.running_mean"]  # frozen, still updated
    assert all(moved.values())
    net = build_backbone("resnet18", r18_weights, [4], layers_to_freeze=1, frozen_bn="eval")
    moved = _bn_step(net)
    for key, value in moved.items():
        assert value == key.startswith(("layer2.", "layer3.")), key
    assert not net.bn1.training and not net.layer1.training and net.layer2.training


def test_frozen_bn_is_a_config_option():
    assert config_from_dict({}).model.frozen_bn == "train"
    with pytest.raises(UserError, match="model.frozen_bn"):
        config_from_dict({"model": {"frozen_bn": "fixed"}})


def test_feature_shape_keeps_modes_and_stats():
    net = build_backbone("resnet18", "none", [4]).train()
    before = net.bn1.running_mean.clone()
    assert net.feature_shape((128, 96)) == (256, 8, 6)
    assert net.training and net.layer3.training
    assert torch.equal(before, net.bn1.running_mean)


# ---------------------------------------------------------------- pretrained weights


def _random_state_dict(name="resnet18"):
    torch.manual_seed(7)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


def test_pretrained_from_explicit_path(tmp_path):
    state = _random_state_dict()
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    net = build_backbone("resnet18", str(path), [4])
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(k.startswith("layer4.") for k in net.state_dict())


def test_pretrained_imagenet_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _random_state_dict()
    file_name = os.path.basename(imagenet_weights("resnet18").url)
    target = tmp_path / "hub" / "checkpoints" / file_name
    assert imagenet_weights_path("resnet18") == target
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    model = build_model(ModelConfig(pretrained="imagenet", layers_to_freeze=0, aggregator="gem"), SIZE)
    assert torch.equal(model.backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_missing_imagenet_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(PretrainedWeightsNotFound) as info:
        build_model(ModelConfig(pretrained="imagenet"), SIZE)
    message = str(info.value)
    assert str(expected) in message
    assert imagenet_weights("resnet18").url in message
    assert "pretrained: none" in message and "VPR_OFFLINE" in message
    assert isinstance(info.value, FileNotFoundError)
    assert not expected.exists()  # offline: nothing was downloaded


def test_missing_explicit_weights_file(tmp_path):
    with pytest.raises(PretrainedWeightsNotFound, match="nope.pth"):
        build_backbone("resnet18", str(tmp_path / "nope.pth"))


def test_mismatched_weights_name_the_file(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(_random_state_dict("resnet34"), path)
    with pytest.raises(PretrainedWeightsMismatch, match="r34.pth") as info:
        build_backbone("resnet18", str(path))
    assert "unexpected keys" in str(info.value)
    path50 = tmp_path / "r50.pth"
    torch.save(_random_state_dict("resnet50"), path50)
    with pytest.raises(PretrainedWeightsMismatch, match="shape mismatches"):
        build_backbone("resnet18", str(path50))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsMismatch, match="garbage.pth"):
        build_backbone("resnet18", str(garbage))


# ---------------------------------------------------------------- aggregators


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_aggregator_shape_norm_and_gradients(name):
    torch.manual_seed(0)
    agg = build_aggregator(name, 32, 4, 5)
    x = torch.rand(2, 32, 4, 5, requires_grad=True)
    out = agg(x)
    assert out.shape == (2, agg.out_dim) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for key, param in agg.named_parameters():
        assert param.grad is not None, key


def test_default_dims():
    dims = {name: build_aggregator(name, 32, 4, 5).out_dim for name in AGGREGATORS}
    assert dims == {"avg": 32, "gem": 32, "mixvpr": 512 * 4, "cosplace": 512, "convap": 512 * 2 * 2,
                    "boq": 512 * 32, "salad": 64 * 128 + 256}


def test_mixvpr_and_convap_dims_follow_params():
    mix = build_aggregator("mixvpr", 16, 3, 3, {"out_channels": 8, "out_rows": 3, "mix_depth": 1, "mlp_ratio": 2})
    assert mix.out_dim == 24 and mix(torch.rand(2, 16, 3, 3)).shape == (2, 24)
    assert len(mix.mixers) == 1 and mix.mixers[0].mix[1].out_features == 18
    conv = build_aggregator("convap", 16, 3, 3, {"out_channels": 8, "s1": 1, "s2": 3})
    assert conv.out_dim == 24 and conv(torch.rand(2, 16, 3, 3)).shape == (2, 24)
    cos = build_aggregator("cosplace", 16, 3, 3, {"out_dim": 10})
    assert cos(torch.rand(2, 16, 3, 3)).shape == (2, 10)


def test_mixvpr_refuses_other_feature_size():
    mix = build_aggregator("mixvpr", 16, 3, 3)
    with pytest.raises(ValueError, match="built for 3x3"):
        mix(torch.rand(2, 16, 4, 4))


def test_gem_p_is_learnable():
    gem = build_aggregator("gem", 8, 2, 2, {"p": 2.5})
    assert isinstance(gem.p, torch.nn.Parameter) and gem.p.requires_grad
    assert gem.p.item() == pytest.approx(2.5)
    assert any(p is gem.p for p in gem.parameters())
    x = torch.rand(2, 8, 2, 2) + 0.1
    expected = torch.nn.functional.normalize(x.pow(2.5).mean(dim=(2, 3)).pow(1 / 2.5), dim=1)
    assert torch.allclose(gem(x), expected, atol=1e-6)


def test_aggregator_errors():
    with pytest.raises(UserError, match="unknown aggregator 'netvlad' .valid: avg, gem, mixvpr, cosplace, convap"):
        build_aggregator("netvlad", 8, 2, 2)
    with pytest.raises(UserError, match="aggregator.out_dims: not accepted by aggregator 'mixvpr' .valid: out_channels"):
        build_aggregator("mixvpr", 8, 2, 2, {"out_dims": 3})
    with pytest.raises(UserError, match="aggregator.p: not accepted by aggregator 'avg' .valid: none"):
        build_aggregator("avg", 8, 2, 2, {"p": 3})
    with pytest.raises(UserError, match="aggregator.out_rows: Input should be greater than or equal to 1"):
        build_aggregator("mixvpr", 8, 2, 2, {"out_rows": 0})
    with pytest.raises(UserError, match="aggregator.p: Input should be greater than 0"):
        build_aggregator("gem", 8, 2, 2, {"p": -1})
    with pytest.raises(UserError, match="aggregator.s1"):
        build_aggregator("convap", 8, 2, 2, {"s1": 1.5})
    params = {"out_rows": 2}
    build_aggregator("mixvpr", 8, 2, 2, params)
    assert params == {"out_rows": 2}
    assert aggregator_defaults("convap") == {"out_channels": 512, "s1": 2, "s2": 2}


# ---------------------------------------------------------------- build_model


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_build_model_forward(name):
    model = build_model(_model_cfg(aggregator=name), SIZE)
    assert model.feature_shape == (256, 4, 4)
    out = model(torch.rand(2, 3, *SIZE))
    assert out.shape == (2, model.descriptor_dim) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    text = repr(model)
    assert "resnet18" in text and "256x4x4" in text and f"descriptor_dim={model.descriptor_dim}" in text


def test_build_model_training_step_updates_only_trainable(r18_weights):
    model = build_model(_model_cfg(pretrained=r18_weights, layers_to_crop=[3, 4], layers_to_freeze=1,
                                   frozen_bn="eval",
                                   aggregator={"name": "mixvpr", "out_channels": 16, "out_rows": 2}), SIZE)
    assert model.training and model.descriptor_dim == 32 and model.feature_shape == (128, 8, 8)
    model.eval().train()  # with frozen_bn eval the parent's train() keeps the frozen stem and layer1 in eval
    assert not model.backbone.bn1.training and not model.backbone.layer1.training
    assert model.backbone.layer2.training and model.aggregator.training
    frozen_before = model.backbone.layer1[0].conv1.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.rand(2, 3, *SIZE)).sum()
    loss.backward()
    opt.step()
    assert torch.equal(frozen_before, model.backbone.layer1[0].conv1.weight)
    assert model.aggregator.channel_proj.weight.grad is not None


def test_build_model_errors():
    with pytest.raises(UserError, match=r"model.aggregator.name: unknown aggregator 'vlad' \(valid: avg, gem"):
        _model_cfg(aggregator="vlad")
    with pytest.raises(UserError, match="valid: resnet18, resnet34, resnet50"):
        _model_cfg(backbone="resnet101")
    with pytest.raises(ValueError, match="image_size"):
        build_model(_model_cfg(), (64,))
    with pytest.raises(ValueError, match="image_size"):
        build_model(_model_cfg(), (0, 64))


def test_model_from_config_uses_the_run_image_size():
    cfg = config_from_dict({"model": {"pretrained": "none", "aggregator": "mixvpr"}, "data": {"image_size": [64, 96]},
                            "evaluation": {"resize": [64, 96]}})
    model = model_from_config(cfg)
    assert model.image_size == (64, 96) and model.feature_shape == (256, 4, 6)


def test_bf16_autocast_channels_last_cpu():
    model = build_model(_model_cfg(aggregator={"name": "mixvpr", "out_channels": 32, "out_rows": 2}), SIZE)
    model = model.to(memory_format=torch.channels_last).eval()
    images = torch.rand(2, 3, *SIZE).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
    assert out.dtype == torch.float32 and out.shape == (2, 64)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        reference = model(images)
    assert torch.nn.functional.cosine_similarity(out, reference).min() > 0.9
    for name in ("avg", "gem", "cosplace", "convap"):
        agg = build_aggregator(name, 16, 4, 4)
        x = torch.rand(2, 16, 4, 4).to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = agg(x)
        assert y.dtype == torch.float32 and torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)


class TensorIndexDataset(torch.utils.data.Dataset):
    """(image, index) pairs over in-memory images, as extract_descriptors reads a split."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_stored_bf16_network_gives_the_evaluated_descriptors_bit_for_bit(name, tmp_path):
    # A run evaluated under bf16 autocast stores its conv/linear weights in bf16: half the bytes,
    # and unpickled (as mlflow.pytorch.load_model does) it computes exactly what was recorded.
    model = build_model(_model_cfg(aggregator=name), SIZE).eval()
    with torch.no_grad():  # trained-looking BatchNorm statistics, so they matter to the output
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 1.5)
    stored = storage_copy(model, "bf16")
    # BoQ's attention projections (MultiheadAttention.in_proj_weight, not an nn.Linear) and its
    # queries stay fp32 (autocast casts them when it computes): a smaller saving.
    assert stored_bytes(stored) < (0.7 if name == "boq" else 0.55) * stored_bytes(model)
    assert stored.backbone.conv1.weight.dtype == torch.bfloat16 and stored.backbone.bn1.weight.dtype == torch.float32
    torch.save(stored, tmp_path / "model.pth")
    loaded = torch.load(tmp_path / "model.pth", weights_only=False)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    images = torch.rand(3, 3, *SIZE)
    evaluated = extract_descriptors(model, TensorIndexDataset(images), batch_size=2, precision="bf16",
                                    channels_last=True, preprocess=None, progress=False)
    reloaded = extract_descriptors(loaded, TensorIndexDataset(images), batch_size=2, precision="bf16",
                                   channels_last=True, preprocess=None, progress=False)
    assert torch.equal(evaluated, reloaded)
    with torch.no_grad():  # fp32 evaluation of the rounded weights is close, not equal: hence fp32 runs store fp32
        assert torch.nn.functional.cosine_similarity(model(images), loaded(images)).min() > 0.99


def test_fp32_evaluated_network_is_stored_unchanged():
    model = build_model(_model_cfg(aggregator="gem"), SIZE)
    stored = storage_copy(model, "fp32")
    assert stored is not model and stored_bytes(stored) == stored_bytes(model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), stored.state_dict().values()))
    with pytest.raises(ValueError, match="precision must be bf16 or fp32, got 'fp16'"):
        storage_copy(model, "fp16")


def test_describe_output_dims_resnet18_layer3():
    rows = {row["aggregator"]: row for row in describe_output_dims((320, 320))}
    assert set(rows) == set(AGGREGATORS)
    assert all(row["feature_map"] == "256x20x20" for row in rows.values())
    assert {k: r["descriptor_dim"] for k, r in rows.items()} == {
        "avg": 256, "gem": 256, "mixvpr": 2048, "cosplace": 512, "convap": 2048, "boq": 16384, "salad": 8448}


def test_docs_table_is_current():
    docs = Path(__file__).resolve().parents[1] / "docs" / "models.md"
    assert output_dims_markdown((320, 320)) in docs.read_text(encoding="utf-8"), \
        "regenerate the table in docs/models.md with output_dims_markdown((320, 320))"
