"""DINOv2 backbones, BoQ and SALAD: equal to their authors' code, trainable, and strict about settings.

The reference modules below are our transcriptions of the authors' forward passes, cited line by
file, kept in this test only: our implementations must give the same descriptors with the same
weights (copied by name), on ResNet and on DINOv2 feature maps.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from pipeline.config import config_from_dict
from pipeline.errors import ConfigError
from pipeline.models.aggregators import build_aggregator
from pipeline.models.dinov2 import DinoV2Backbone

TOLERANCE = 1e-5  # float32; the attention kernels differ (fused vs explicit), the maths do not


# --- references: transcriptions of the authors' code ---------------------------------------------

class RefBoQBlock(nn.Module):
    """amaralibey/Bag-of-Queries src/boq.py (commit 1a4965e), class BoQBlock."""

    def __init__(self, in_dim, num_queries, nheads=8):
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(d_model=in_dim, nhead=nheads, dim_feedforward=4 * in_dim,
                                                  batch_first=True, dropout=0.)
        self.queries = nn.Parameter(torch.randn(1, num_queries, in_dim))
        self.self_attn = nn.MultiheadAttention(in_dim, num_heads=nheads, batch_first=True)
        self.norm_q = nn.LayerNorm(in_dim)
        self.cross_attn = nn.MultiheadAttention(in_dim, num_heads=nheads, batch_first=True)
        self.norm_out = nn.LayerNorm(in_dim)

    def forward(self, x):
        b = x.size(0)
        x = self.encoder(x)
        q = self.queries.repeat(b, 1, 1)
        q = q + self.self_attn(q, q, q)[0]
        q = self.norm_q(q)
        out, attn = self.cross_attn(q, x, x)
        return x, self.norm_out(out), attn.detach()


class RefBoQ(nn.Module):
    """amaralibey/Bag-of-Queries src/boq.py (commit 1a4965e), class BoQ (returns the descriptor only)."""

    def __init__(self, in_channels=1024, proj_channels=512, num_queries=32, num_layers=2, row_dim=32):
        super().__init__()
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList([RefBoQBlock(proj_channels, num_queries, nheads=proj_channels // 64)
                                   for _ in range(num_layers)])
        self.fc = nn.Linear(num_layers * num_queries, row_dim)

    def forward(self, x):
        x = self.proj_c(x)
        x = x.flatten(2).permute(0, 2, 1)
        x = self.norm_input(x)
        outs = []
        for block in self.boqs:
            x, out, _ = block(x)
            outs.append(out)
        out = torch.cat(outs, dim=1)
        out = self.fc(out.permute(0, 2, 1))
        return nn.functional.normalize(out.flatten(1), p=2, dim=-1)


def ref_log_otp_solver(log_a, log_b, M, num_iters=20, reg=1.0):
    """serizba/salad models/aggregators/salad.py (commit e593005), log_otp_solver (from OpenGlue)."""
    M = M / reg
    u, v = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(num_iters):
        u = log_a - torch.logsumexp(M + v.unsqueeze(1), dim=2).squeeze()
        v = log_b - torch.logsumexp(M + u.unsqueeze(2), dim=1).squeeze()
    return M + u.unsqueeze(2) + v.unsqueeze(1)


def ref_get_matching_probs(S, dustbin_score=1.0, num_iters=3, reg=1.0):
    """serizba/salad models/aggregators/salad.py (commit e593005), get_matching_probs."""
    batch_size, m, n = S.size()
    S_aug = torch.empty(batch_size, m + 1, n, dtype=S.dtype, device=S.device)
    S_aug[:, :m, :n] = S
    S_aug[:, m, :] = dustbin_score
    norm = -torch.tensor(math.log(n + m), device=S.device)
    log_a, log_b = norm.expand(m + 1).contiguous(), norm.expand(n).contiguous()
    log_a[-1] = log_a[-1] + math.log(n - m)
    log_a, log_b = log_a.expand(batch_size, -1), log_b.expand(batch_size, -1)
    return ref_log_otp_solver(log_a, log_b, S_aug, num_iters=num_iters, reg=reg) - norm


class RefSALAD(nn.Module):
    """serizba/salad models/aggregators/salad.py (commit e593005), class SALAD."""

    def __init__(self, num_channels=1536, num_clusters=64, cluster_dim=128, token_dim=256, dropout=0.3):
        super().__init__()
        self.num_clusters, self.cluster_dim = num_clusters, cluster_dim
        dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.token_features = nn.Sequential(nn.Linear(num_channels, 512), nn.ReLU(), nn.Linear(512, token_dim))
        self.cluster_features = nn.Sequential(nn.Conv2d(num_channels, 512, 1), dropout, nn.ReLU(),
                                              nn.Conv2d(512, cluster_dim, 1))
        self.score = nn.Sequential(nn.Conv2d(num_channels, 512, 1), dropout, nn.ReLU(), nn.Conv2d(512, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.))

    def forward(self, x):
        x, t = x
        f = self.cluster_features(x).flatten(2)
        p = self.score(x).flatten(2)
        t = self.token_features(t)
        p = ref_get_matching_probs(p, self.dust_bin, 3)
        p = torch.exp(p)
        p = p[:, :-1, :]
        p = p.unsqueeze(1).repeat(1, self.cluster_dim, 1, 1)
        f = f.unsqueeze(2).repeat(1, 1, self.num_clusters, 1)
        f = torch.cat([nn.functional.normalize(t, p=2, dim=-1),
                       nn.functional.normalize((f * p).sum(dim=-1), p=2, dim=1).flatten(1)], dim=-1)
        return nn.functional.normalize(f, p=2, dim=-1)


# --- equality ------------------------------------------------------------------------------------

def _feature_maps():
    """A ResNet-18 layer3 feature map and a DINOv2-S patch-token map with its class token."""
    torch.manual_seed(0)
    resnet = torch.randn(3, 256, 10, 10)
    vit = DinoV2Backbone("dinov2_vits14", pretrained="none").eval()
    with torch.no_grad():
        fmap, token = vit.forward_features(torch.rand(3, 3, 112, 112))
    return {"resnet": (resnet, resnet.mean(dim=(2, 3))), "dinov2": (fmap, token)}


@pytest.mark.parametrize("kind", ["resnet", "dinov2"])
def test_boq_equals_the_authors_module(kind):
    fmap, _ = _feature_maps()[kind]
    proj = 512 if kind == "resnet" else 384                 # the authors' settings per backbone (hubconf.py)
    torch.manual_seed(1)
    ref = RefBoQ(fmap.shape[1], proj_channels=proj, num_queries=64, num_layers=2, row_dim=32).eval()
    ours = build_aggregator({"name": "boq", "proj_channels": proj, "num_queries": 64, "num_layers": 2, "row_dim": 32},
                            *fmap.shape[1:]).eval()
    ours.load_state_dict(ref.state_dict())                  # their weights load by name, strictly
    with torch.no_grad():
        expected, got = ref(fmap), ours(fmap)
    assert got.shape == (3, proj * 32) and ours.out_dim == proj * 32
    assert torch.allclose(got, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", ["resnet", "dinov2"])
def test_salad_equals_the_authors_module(kind):
    fmap, token = _feature_maps()[kind]
    torch.manual_seed(2)
    ref = RefSALAD(fmap.shape[1], num_clusters=16, cluster_dim=32, token_dim=64).eval()
    ours = build_aggregator({"name": "salad", "num_clusters": 16, "cluster_dim": 32, "token_dim": 64},
                            *fmap.shape[1:]).eval()
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        expected, got = ref((fmap, token)), ours(fmap, token)
    assert got.shape == (3, 16 * 32 + 64) and ours.out_dim == 16 * 32 + 64
    assert torch.allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_salad_stays_finite_where_the_reference_is_undefined():
    # 4 x 4 = 16 positions for 64 clusters: the reference's dustbin mass log(n - m) does not exist.
    fmap = torch.randn(2, 256, 4, 4)
    torch.manual_seed(3)
    ref = RefSALAD(256).eval()
    ours = build_aggregator("salad", 256, 4, 4).eval()
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad(), pytest.raises(ValueError, match="math domain error"):
        ref((fmap, fmap.mean((2, 3))))
    with torch.no_grad():
        out = ours(fmap, None)
    assert torch.isfinite(out).all() and torch.allclose(out.norm(dim=1), torch.ones(2))


# --- DINOv2 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("unfrozen", [0, 2, 12])
def test_dinov2_trains_exactly_its_last_blocks(unfrozen):
    net = DinoV2Backbone("dinov2_vits14", pretrained="none", num_unfrozen_blocks=unfrozen)
    # The references' rule: every parameter frozen, then blocks[-N:] unfrozen (BoQ src/backbones.py).
    expected = {id(p) for block in list(net.vit.blocks)[len(net.vit.blocks) - unfrozen:] for p in block.parameters()}
    assert {id(p) for p in net.parameters() if p.requires_grad} == expected
    images = torch.rand(1, 3, 28, 28)
    fmap = net(images)
    assert fmap.shape == (1, 384, 2, 2)
    if unfrozen:
        fmap.sum().backward()
        assert all(p.grad is None for p in net.parameters() if not p.requires_grad)
        assert any(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_dinov2_weights_load_from_the_cache_or_a_file_and_never_download_offline(tmp_path, monkeypatch):
    from pipeline.models.backbones import PretrainedWeightsNotFound
    from pipeline.models.dinov2 import weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VPR_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsNotFound, match=r"dinov2_vits14_pretrain.pth.*VPR_OFFLINE is set"):
        DinoV2Backbone("dinov2_vits14", pretrained="dinov2")
    source = DinoV2Backbone("dinov2_vits14", pretrained="none")
    path = weights_path("dinov2_vits14")
    path.parent.mkdir(parents=True)
    torch.save(source.vit.state_dict(), path)               # the file, where the cache keeps it
    cached = DinoV2Backbone("dinov2_vits14", pretrained="dinov2")
    from_file = DinoV2Backbone("dinov2_vits14", pretrained=str(path))
    for net in (cached, from_file):
        assert all(torch.equal(a, b) for a, b in zip(net.vit.state_dict().values(), source.vit.state_dict().values()))


@pytest.mark.parametrize(("changes", "message"), [
    ({"data": {"image_size": [64, 64]}}, "data.image_size [64, 64]: a DINOv2 backbone needs sides that are multiples "
                                          "of 14 (its patch size), e.g. [70, 70]"),
    ({"model": {"num_unfrozen_blocks": 13}}, "num_unfrozen_blocks must be in 0..12"),
    ({"model": {"pretrained": "imagenet"}}, "a DINOv2 backbone takes 'dinov2'"),
    ({"model": {"aggregator": {"name": "boq", "proj_channels": 100}}}, "proj_channels must be a multiple of 64"),
])
def test_bad_modern_settings_are_named(changes, message):
    base = {"model": {"backbone": "dinov2_vits14", "pretrained": "none"}, "data": {"image_size": [56, 56]},
            "evaluation": {"resize": [56, 56]}}
    for section, values in changes.items():
        base[section] = {**base[section], **values}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.")):
        config_from_dict(base)


def test_a_patch_size_mismatch_is_one_line_on_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--set", "model.backbone=dinov2_vits14",
                             "--set", "model.pretrained=none", "--set", "data.image_size=[64,64]",
                             "--out", str(tmp_path / "r"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "multiples of 14" in result.stderr and "Traceback" not in result.stderr


# --- every new name trains one step ------------------------------------------------------------------

@pytest.mark.parametrize(("backbone", "aggregator"), [
    ("resnet18", {"name": "boq", "proj_channels": 128, "num_queries": 8, "row_dim": 4}),
    ("resnet18", {"name": "salad", "num_clusters": 8, "cluster_dim": 16, "token_dim": 32}),
    ("dinov2_vits14", {"name": "salad", "num_clusters": 8, "cluster_dim": 16, "token_dim": 32}),
    ("dinov2_vitb14", {"name": "boq", "proj_channels": 128, "num_queries": 8, "row_dim": 4}),
])
def test_every_new_name_trains_one_step(embedded_root, tmp_path, backbone, aggregator):
    from pipeline.training.trainer import train

    cfg = config_from_dict({
        "model": {"backbone": backbone, "pretrained": "none", "aggregator": aggregator, "num_unfrozen_blocks": 1},
        "data": {"train_root": str(embedded_root / "gsv_xs"), "val_root": str(embedded_root / "sf_xs" / "val"),
                 "image_size": [28, 28], "num_workers": 0},
        "evaluation": {"resize": [28, 28]}, "scheduler": {"name": "none"},
        "training": {"epochs": 1, "batches_per_epoch": 1, "places_per_batch": 4, "device": "cpu",
                     "precision": "fp32", "backbone_lr_scale": 0.1}})
    summary = train(cfg, out_dir=tmp_path / "run", progress=False)
    assert summary["epochs"] == 1 and math.isfinite(summary["final"]["train_loss"])


# --- cost next to recall --------------------------------------------------------------------------

def test_runs_record_their_cost_and_the_report_sets_it_next_to_recall(embedded_root, tmp_path):
    import yaml
    from mlflow import MlflowClient

    from cli_helpers import vpr
    from pipeline.reporting.figures.cost import pareto_front
    from test_sweeps import make_project

    project = make_project(tmp_path, embedded_root, ["gem", "boq"], epochs=1)
    study_file = project / "experiments" / "t_aggregators.yaml"
    study = yaml.safe_load(study_file.read_text())
    study["cost"] = True
    study["grid"] = {"model.aggregator": [{"name": "gem"}, {"name": "boq", "proj_channels": 64, "num_queries": 4,
                                                             "row_dim": 2}]}
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))
    run = vpr(project, "sweep", "run", "--jobs", "2", "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vpr-sweep").experiment_id], "tags.`vpr.kind` = 'run'")
    dims = sorted(r.data.metrics["cost_descriptor_dim"] for r in runs)
    assert dims == [128.0, 256.0]  # BoQ 64 x 2, GeM 256-D
    for r in runs:
        m = r.data.metrics
        assert m["cost_params_total"] >= m["cost_params_trainable"] > 0
        assert m["cost_extraction_ms_per_image"] > 0 and m["cost_peak_memory_mb"] > 50
        assert m["cost_train_images_per_second"] > 0
        assert r.data.tags["vpr.precision"] in ("fp32", "bf16") and r.data.tags["vpr.device"].startswith("cpu: ")
    report = vpr(project, "report", "--out", "reports", "--quiet")
    assert report.returncode == 0, report.stderr
    tex = (project / "reports" / "tables" / "t_aggregators_cost.tex").read_text()
    assert "ms/img" in tex and "peak MB" in tex
    assert (project / "reports" / "figures" / "t_aggregators" / "t_aggregators_recall_vs_cost.png").is_file()
    assert pareto_front([(1.0, 50.0), (2.0, 40.0), (3.0, 60.0), (0.5, 10.0)]) == [3, 0, 2]
