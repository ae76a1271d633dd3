"""Training components: registries build exactly their class, param errors, LR trajectories,
scheduler resume, and every accepted loss x miner x distance combination trains a step."""

from __future__ import annotations

import copy
import inspect
import io
import math

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from pipeline.components.losses import (DISTANCES, LOSSES, MINERS, build_distance, build_loss, build_miner,
                                         check_compatibility)
from pipeline.components.optim import (OPTIMIZERS, SCHEDULERS, SchedulerDriver, build_optimizer,
                                       build_scheduler)
from pipeline.errors import ConfigError


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


# --- registries ------------------------------------------------------------------------------

EXPECTED_LOSSES = {
    "contrastive": pml_losses.ContrastiveLoss, "triplet": pml_losses.TripletMarginLoss,
    "multisimilarity": pml_losses.MultiSimilarityLoss, "angular": pml_losses.AngularLoss,
    "fastap": pml_losses.FastAPLoss, "ntxent": pml_losses.NTXentLoss,
}
EXPECTED_MINERS = {
    "multisimilarity": pml_miners.MultiSimilarityMiner, "angular": pml_miners.AngularMiner,
    "batchhard": pml_miners.BatchHardMiner, "batcheasyhard": pml_miners.BatchEasyHardMiner,
    "uniformhistogram": pml_miners.UniformHistogramMiner,
}
EXPECTED_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                       "asgd": torch.optim.ASGD}


def test_registry_names_are_the_documented_ones() -> None:
    assert list(LOSSES) == ["contrastive", "triplet", "multisimilarity", "angular", "fastap", "ntxent"]
    assert list(MINERS) == ["none", "multisimilarity", "angular", "batchhard", "batcheasyhard", "uniformhistogram"]
    assert list(OPTIMIZERS) == ["adam", "adamw", "sgd", "asgd"]
    assert list(SCHEDULERS) == ["none", "multistep", "plateau", "cosine", "cyclic", "linear"]
    assert list(DISTANCES) == ["dot", "cosine", "euclidean", "squared_euclidean"]


@pytest.mark.parametrize("name", list(EXPECTED_LOSSES))
def test_loss_name_builds_exactly_its_class(name: str) -> None:
    loss = build_loss(name)
    assert type(loss) is EXPECTED_LOSSES[name]
    assert build_loss({"name": name}).__class__ is EXPECTED_LOSSES[name]


@pytest.mark.parametrize("name", list(EXPECTED_MINERS))
def test_miner_name_builds_exactly_its_class(name: str) -> None:
    assert type(build_miner(name)) is EXPECTED_MINERS[name]


def test_miner_none_is_none() -> None:
    assert build_miner("none") is None
    assert build_miner({"name": "none"}) is None


@pytest.mark.parametrize("name", list(EXPECTED_OPTIMIZERS))
def test_optimizer_name_builds_exactly_its_class(name: str) -> None:
    assert type(build_optimizer({"name": name}, _params())) is EXPECTED_OPTIMIZERS[name]


def test_adam_is_not_adamw() -> None:
    adam = build_optimizer({"name": "adam", "weight_decay": 0.1}, _params())
    assert type(adam) is torch.optim.Adam
    assert not isinstance(adam, torch.optim.AdamW)
    assert not adam.defaults.get("decoupled_weight_decay", False)  # L2 in the gradient, not AdamW's decay
    adamw = build_optimizer({"name": "adamw"}, _params())
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.01


def test_optimizer_params_reach_torch() -> None:
    sgd = build_optimizer({"name": "sgd", "lr": 0.1}, _params())
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] is False
    assert sgd.defaults["lr"] == 0.1 and sgd.defaults["weight_decay"] == 0.001
    adam = build_optimizer({"name": "adam", "betas": [0.8, 0.99]}, _params())
    assert adam.defaults["betas"] == (0.8, 0.99)
    asgd = build_optimizer({"name": "asgd", "lambd": 1e-3, "alpha": 0.5, "t0": 10}, _params())
    assert (asgd.defaults["lambd"], asgd.defaults["alpha"], asgd.defaults["t0"]) == (1e-3, 0.5, 10)


def test_param_names_are_constructor_keywords() -> None:
    # A YAML param name must be the class's own keyword, never a renamed alias.
    for registry in (LOSSES, MINERS, OPTIMIZERS):
        for name, model in registry.items():
            if model.target_class() is None:
                continue
            accepted = set(inspect.signature(model.target_class().__init__).parameters)
            fields = set(model.model_fields) - {"name", "distance"}
            assert fields <= accepted, (name, fields - accepted)


def test_default_distances_and_recipe_values() -> None:
    ms = build_loss("multisimilarity")
    # GSV-Cities: MultiSimilarityLoss(alpha=1, beta=50, base=0, distance=DotProductSimilarity()),
    # whose PML default normalises: CosineSimilarity is that DotProductSimilarity.
    assert isinstance(ms.distance, pml_distances.DotProductSimilarity) and ms.distance.normalize_embeddings
    assert (ms.alpha, ms.beta, ms.base) == (1.0, 50.0, 0.0)
    assert build_miner("multisimilarity").epsilon == 0.1
    fastap = build_loss("fastap").distance
    assert isinstance(fastap, pml_distances.LpDistance) and fastap.power == 2
    angular = build_loss("angular").distance
    assert isinstance(angular, pml_distances.LpDistance) and angular.power == 1 and angular.normalize_embeddings
    dot = build_loss({"name": "ntxent", "distance": "dot"}).distance
    assert type(dot) is pml_distances.DotProductSimilarity and not dot.normalize_embeddings
    assert build_loss("triplet").margin == 0.05  # PML's default
    contrastive = build_loss("contrastive")
    assert (contrastive.pos_margin, contrastive.neg_margin) == (0.0, 1.0)


# --- errors ----------------------------------------------------------------------------------

def test_optimizer_param_not_taken_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        build_optimizer({"name": "adam", "momentum": 0.9}, _params())
    message = str(info.value)
    assert "optimizer.momentum" in message and "adam" in message
    assert "valid: lr, weight_decay, betas" in message


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.name: unknown optimizer 'adamax' \(valid: adam, adamw, sgd, asgd\)"):
        build_optimizer({"name": "adamax"}, _params())
    with pytest.raises(ConfigError, match="valid: contrastive, triplet, multisimilarity, angular, fastap, ntxent"):
        build_loss("arcface")
    with pytest.raises(ConfigError, match="valid: none, multisimilarity, angular"):
        build_miner({"name": "tripletmargin"})
    with pytest.raises(ConfigError, match="scheduler.name: unknown scheduler 'step'"):
        build_scheduler({"name": "step"}, build_optimizer("sgd", _params()), 10, 3)


@pytest.mark.parametrize("cfg, path", [
    ({"name": "sgd", "lr": 0}, "optimizer.lr"),
    ({"name": "sgd", "momentum": 0.0, "nesterov": True}, "optimizer.nesterov"),
    ({"name": "adam", "betas": [0.9, 1.0]}, "optimizer.betas"),
    ({"name": "asgd", "betas": [0.9, 0.99]}, "optimizer.betas"),
    ({"name": "sgd", "weight_decay": -1}, "optimizer.weight_decay"),
])
def test_invalid_optimizer_values_name_the_key(cfg: dict, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        build_optimizer(cfg, _params())


def test_pml_distance_assertions_are_caught_at_config_time() -> None:
    # The rules mirror PML's own asserts: confirm PML really refuses what we refuse.
    with pytest.raises(ConfigError, match=r"loss\.distance: angular accepts only euclidean"):
        build_loss({"name": "angular", "distance": "squared_euclidean"})
    with pytest.raises(AssertionError):
        pml_losses.AngularLoss(distance=build_distance("squared_euclidean"))
    with pytest.raises(ConfigError, match=r"loss\.distance: fastap accepts only euclidean or squared_euclidean"):
        build_loss({"name": "fastap", "distance": "cosine"})
    with pytest.raises(AssertionError):
        pml_losses.FastAPLoss(distance=build_distance("cosine"))
    with pytest.raises(ConfigError, match=r"miner\.distance: angular accepts only euclidean"):
        build_miner({"name": "angular", "distance": "dot"})
    with pytest.raises(AssertionError):
        pml_miners.AngularMiner(distance=build_distance("dot"))


def test_batcheasyhard_strategies_pml_refuses() -> None:
    for pos, neg in [("semihard", "semihard"), ("semihard", "all"), ("all", "semihard")]:
        with pytest.raises(ConfigError, match=r"miner\.pos_strategy"):
            build_miner({"name": "batcheasyhard", "pos_strategy": pos, "neg_strategy": neg})
        with pytest.raises(ValueError):
            pml_miners.BatchEasyHardMiner(pos_strategy=pos, neg_strategy=neg)
    with pytest.raises(ConfigError, match="miner.pos_strategy"):
        build_miner({"name": "batcheasyhard", "pos_strategy": "hardest"})
    assert type(build_miner({"name": "batcheasyhard", "pos_strategy": "hard", "neg_strategy": "all"})) \
        is pml_miners.BatchEasyHardMiner


def test_contrastive_margins_must_follow_the_distance() -> None:
    with pytest.raises(ConfigError, match=r"loss\.pos_margin: .*pos_margin: 1.0, neg_margin: 0.0"):
        build_loss({"name": "contrastive", "distance": "cosine"})
    loss = build_loss({"name": "contrastive", "distance": "cosine", "pos_margin": 1, "neg_margin": 0})
    assert isinstance(loss.distance, pml_distances.CosineSimilarity)
    with pytest.raises(ConfigError, match=r"loss\.pos_margin"):
        build_loss({"name": "contrastive", "pos_margin": 1, "neg_margin": 0})


def test_miner_and_loss_must_share_a_geometry() -> None:
    with pytest.raises(ConfigError) as info:
        check_compatibility({"name": "multisimilarity", "distance": "dot"}, "multisimilarity")
    message = str(info.value)
    assert "multisimilarity" in message and "'dot'" in message and "miner.distance: dot" in message
    check_compatibility({"name": "multisimilarity", "distance": "dot"}, {"name": "multisimilarity", "distance": "dot"})
    check_compatibility("fastap", "angular")  # squared_euclidean vs euclidean: same ordering, paper 004's pair
    check_compatibility({"name": "angular"}, "none")


# --- every loss x miner x distance ----------------------------------------------------------

def _loss_variants(name: str) -> list[dict]:
    out = []
    for distance in DISTANCES:
        cfg = {"name": name, "distance": distance}
        if name == "contrastive" and distance in ("dot", "cosine"):
            cfg.update(pos_margin=1.0, neg_margin=0.0)  # similarity margins (see the rule above)
        out.append(cfg)
    return out


def _miner_variants(name: str) -> list[dict]:
    return [{"name": "none"}] if name == "none" else [{"name": name, "distance": d} for d in DISTANCES]


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(32, 16, generator=g)
    labels = torch.arange(8).repeat_interleave(4)  # 8 places x 4 images
    return raw, labels


def _rejection_is_explained(loss_cfg: dict, miner_cfg: dict, err: ConfigError) -> None:
    """A refused combination either fails inside PML or is refused for a documented reason."""
    message = str(err)
    for cfg, kind in ((loss_cfg, "loss"), (miner_cfg, "miner")):
        if f"{kind}.distance: {cfg['name']} accepts only" in message:
            cls = (pml_losses.AngularLoss if kind == "loss" and cfg["name"] == "angular" else
                   pml_losses.FastAPLoss if kind == "loss" else pml_miners.AngularMiner)
            with pytest.raises(AssertionError):
                cls(distance=build_distance(cfg["distance"]))
            return
    # Documented rule: 'dot' (not normalised) on one side only.
    assert "loss.distance / miner.distance" in message, message
    assert (loss_cfg["distance"] == "dot") != (miner_cfg["distance"] == "dot")


@pytest.mark.parametrize("miner_name", list(MINERS))
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_loss_miner_combinations(loss_name: str, miner_name: str) -> None:
    # The default distances of every pair are compatible.
    check_compatibility(loss_name, miner_name)
    raw, labels = _batch()
    accepted = 0
    for loss_cfg in _loss_variants(loss_name):
        for miner_cfg in _miner_variants(miner_name):
            try:
                check_compatibility(loss_cfg, miner_cfg)
            except ConfigError as err:
                _rejection_is_explained(loss_cfg, miner_cfg, err)
                continue
            accepted += 1
            torch.manual_seed(0)
            loss_fn, miner = build_loss(loss_cfg), build_miner(miner_cfg)
            x = raw.clone().requires_grad_(True)
            emb = torch.nn.functional.normalize(x, dim=1)
            indices = miner(emb, labels) if miner is not None else None
            loss = loss_fn(emb, labels, indices)
            loss.backward()
            assert torch.isfinite(loss), (loss_cfg, miner_cfg)
            assert x.grad is not None and torch.isfinite(x.grad).all(), (loss_cfg, miner_cfg)
    assert accepted > 0


# --- schedulers ------------------------------------------------------------------------------

def _optimizer(lr: float = 1.0, name: str = "sgd") -> torch.optim.Optimizer:
    return build_optimizer({"name": name, "lr": lr}, _params())


def _run_epochs(driver: SchedulerDriver, opt: torch.optim.Optimizer, epochs: int, steps: int,
                metric: float | None = None) -> list[float]:
    """LR at the start of each epoch, after stepping through it."""
    lrs = []
    for _ in range(epochs):
        lrs.append(driver.current_lr())
        for _ in range(steps):
            opt.step()
            driver.step_batch()
        driver.step_epoch({"train_loss": 1.0 if metric is None else metric, "val_recall_at_1": 50.0})
    return lrs


def test_scheduler_types() -> None:
    expected = {"none": type(None), "multistep": torch.optim.lr_scheduler.MultiStepLR,
                "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
                "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
                "cyclic": torch.optim.lr_scheduler.CyclicLR}
    for name, cls in expected.items():
        cfg = {"name": name, "max_lr": 2.0} if name == "cyclic" else {"name": name}
        driver = build_scheduler(cfg, _optimizer(), steps_per_epoch=5, epochs=3)
        assert type(driver.scheduler) is cls
        assert driver.interval == "epoch"  # Lightning's default, for every scheduler


def test_multistep_trajectory() -> None:
    opt = _optimizer(1.0)
    driver = build_scheduler({"name": "multistep", "milestones": [2, 4], "gamma": 0.5}, opt, 3, 6)
    lrs = _run_epochs(driver, opt, 6, 3)
    expected = [0.5 ** sum(e >= m for m in (2, 4)) for e in range(6)]
    assert lrs == pytest.approx(expected)


def test_cosine_trajectory_defaults_to_run_epochs() -> None:
    opt = _optimizer(1.0)
    driver = build_scheduler({"name": "cosine", "eta_min": 0.1}, opt, 2, epochs=4)
    lrs = _run_epochs(driver, opt, 5, 2)
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert lrs == pytest.approx(expected)


def _triangular2(it: int, base: float, peak: float, step: int) -> float:
    cycle = math.floor(1 + it / (2 * step))
    x = abs(it / step - 2 * cycle + 1)
    return base + (peak - base) * max(0.0, 1 - x) / 2 ** (cycle - 1)


def test_cyclic_triangular2_trajectory_per_step() -> None:
    opt = _optimizer(0.1, name="adam")  # Adam-family: cycle_momentum stays off
    driver = build_scheduler({"name": "cyclic", "max_lr": 1.0, "step_size_up": 2, "interval": "step"}, opt, 5, 3)
    assert driver.scheduler.cycle_momentum is False
    lrs = []
    for _ in range(12):
        lrs.append(driver.current_lr())
        opt.step()
        driver.step_batch()
    assert lrs == pytest.approx([_triangular2(i, 0.1, 1.0, 2) for i in range(12)])
    assert max(lrs[4:8]) == pytest.approx(0.1 + 0.9 / 2)  # second cycle peaks at half height
    # The half-cycle can be given in epochs: 1 epoch of 5 steps.
    driver = build_scheduler({"name": "cyclic", "max_lr": 1.0, "step_size_up_epochs": 1, "interval": "step"},
                             _optimizer(0.1), 5, 3)
    assert driver.scheduler.total_size == 10


def test_cyclic_per_epoch_is_the_paper_003_triangle() -> None:
    # Seed 003 Table 4: base_lr 1e-3, max_lr 0.1, step_size_up 1, triangular2, stepped per epoch.
    opt = _optimizer(1e-3)
    cfg = {"name": "cyclic", "base_lr": 1e-3, "max_lr": 0.1, "step_size_up": 1, "interval": "epoch"}
    lrs = _run_epochs(build_scheduler(cfg, opt, steps_per_epoch=4, epochs=6), opt, 6, 4)
    assert lrs == pytest.approx([1e-3, 0.1, 1e-3, 1e-3 + 0.099 / 2, 1e-3, 1e-3 + 0.099 / 4])


def test_plateau_is_per_epoch_only() -> None:
    with pytest.raises(ConfigError, match="scheduler.interval: plateau reads a per-epoch metric"):
        build_scheduler({"name": "plateau", "interval": "step"}, _optimizer(), 5, 3)


def test_cyclic_errors() -> None:
    with pytest.raises(ConfigError, match="scheduler.base_lr"):
        build_scheduler({"name": "cyclic", "max_lr": 0.5}, _optimizer(1.0), 5, 3)
    with pytest.raises(ConfigError, match="scheduler.base_lr"):
        build_scheduler({"name": "cyclic", "base_lr": 0.5, "max_lr": 0.5}, _optimizer(0.1), 5, 3)
    with pytest.raises(ConfigError, match="scheduler.step_size_up"):
        build_scheduler({"name": "cyclic", "max_lr": 2, "step_size_up": 3, "step_size_up_epochs": 1}, _optimizer(), 5, 3)
    with pytest.raises(ConfigError, match="scheduler.cycle_momentum"):
        build_scheduler({"name": "cyclic", "max_lr": 2, "cycle_momentum": True}, _optimizer(name="asgd"), 5, 3)


def test_linear_warmup_ramp() -> None:
    opt = _optimizer(1.0)
    driver = build_scheduler({"name": "none", "warmup_steps": 4}, opt, 10, 1)
    lrs = []
    for _ in range(7):
        lrs.append(driver.current_lr())
        opt.step()
        driver.step_batch()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])


def _lrs_per_step(driver: SchedulerDriver, opt: torch.optim.Optimizer, epochs: int, steps: int) -> list[float]:
    lrs = []
    for _ in range(epochs):
        for _ in range(steps):
            lrs.append(driver.current_lr())
            opt.step()
            driver.step_batch()
        driver.step_epoch({})
    return lrs


def test_warmup_sets_the_lr_as_gsv_cities_across_an_epoch_boundary() -> None:
    # GSV-Cities (Lightning): for global step k < warmup_steps, lr := min(1, (k+1)/W) * lr, whatever
    # the scheduler set; MultiStepLR steps per epoch and scales the LR the group holds then.
    # W = 5, 2 steps per epoch, milestone at epoch 1: steps 0..4 are 0.2, 0.4 | 0.6, 0.8 | 1.0 (the
    # milestone's x0.1 at the end of epoch 0 is overwritten by warmup), and the LR stays 1.0 after
    # warmup until milestone 3 scales the LR the group holds: 0.1.
    opt = _optimizer(1.0)
    cfg = {"name": "multistep", "milestones": [1, 3], "gamma": 0.1, "warmup_steps": 5}
    lrs = _lrs_per_step(build_scheduler(cfg, opt, 2, 5), opt, 5, 2)
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1])


def test_warmup_with_a_step_interval_scheduler_overwrites_then_hands_over() -> None:
    # Cosine per step over 6 steps, warmup 3: the first 3 steps are the warmup ramp; from step 3
    # the cosine's own (chainable) values continue from there.
    opt = _optimizer(1.0)
    driver = build_scheduler({"name": "cosine", "interval": "step", "warmup_steps": 3}, opt, 3, 2)
    lrs = _lrs_per_step(driver, opt, 2, 3)
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert driver.scheduler.T_max == 6 and lrs[3] < 1.0 and lrs[3:] == sorted(lrs[3:], reverse=True)


def test_plateau_reacts_to_a_flat_metric() -> None:
    opt = _optimizer(1.0)
    driver = build_scheduler({"name": "plateau", "factor": 0.5, "patience": 1}, opt, 1, 10)
    lrs = []
    for _ in range(6):
        driver.step_epoch({"train_loss": 1.0})
        lrs.append(driver.current_lr())
    # First epoch sets the best; 2 non-improving epochs (> patience 1) halve the LR, counter resets.
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_plateau_on_recall_maximises() -> None:
    opt = _optimizer(1.0)
    driver = build_scheduler({"name": "plateau", "monitor": "val_recall@1", "patience": 0}, opt, 1, 10)
    assert driver.scheduler.mode == "max"
    for recall in (10.0, 20.0, 30.0):  # improving recall: no reduction
        driver.step_epoch({"val_recall_at_1": recall, "train_loss": 5.0})
    assert driver.current_lr() == 1.0
    driver.step_epoch({"val_recall_at_1": 30.0})  # flat: reduce
    assert driver.current_lr() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="val_recall_at_1"):
        driver.step_epoch({"train_loss": 1.0})


SCHEDULER_CASES = [
    {"name": "multistep", "milestones": [1, 3], "gamma": 0.5, "warmup_steps": 4},
    {"name": "cosine", "T_max": 4, "warmup_steps": 3},
    {"name": "cyclic", "base_lr": 0.1, "max_lr": 1.0, "step_size_up": 3, "warmup_steps": 2, "interval": "step"},
    {"name": "cyclic", "base_lr": 0.1, "max_lr": 1.0, "step_size_up": 1, "warmup_steps": 4},
    {"name": "plateau", "patience": 0, "factor": 0.5, "warmup_steps": 1},
    {"name": "none", "warmup_steps": 5},
]


@pytest.mark.parametrize("cfg", SCHEDULER_CASES, ids=[f"{c['name']}-{c.get('interval', 'epoch')}" for c in SCHEDULER_CASES])
def test_state_dict_round_trip_resumes_the_same_trajectory(cfg: dict) -> None:
    steps, epochs, stop = 3, 5, 2

    def fresh() -> tuple[torch.optim.Optimizer, SchedulerDriver]:
        opt = build_optimizer({"name": "sgd", "lr": 1.0}, _params())
        return opt, build_scheduler(cfg, opt, steps, epochs)

    def run(opt: torch.optim.Optimizer, driver: SchedulerDriver, first: int, last: int) -> list[float]:
        lrs = []
        for epoch in range(first, last):
            for _ in range(steps):
                lrs.append(driver.current_lr())
                opt.step()
                driver.step_batch()
            driver.step_epoch({"train_loss": 1.0 / (1 + min(epoch, 1))})  # improves once, then flat
        return lrs

    opt, driver = fresh()
    full = run(opt, driver, 0, epochs)

    opt, driver = fresh()
    head = run(opt, driver, 0, stop)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": driver.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)

    opt2, driver2 = fresh()
    driver2.load_state_dict(checkpoint["scheduler"])
    opt2.load_state_dict(checkpoint["optimizer"])
    driver2.load_state_dict(copy.deepcopy(checkpoint["scheduler"]))  # loading twice is harmless
    tail = run(opt2, driver2, stop, epochs)
    assert head + tail == pytest.approx(full)


def test_state_dict_refuses_another_scheduler() -> None:
    opt = _optimizer()
    state = build_scheduler({"name": "cosine"}, opt, 2, 3).state_dict()
    with pytest.raises(ValueError, match="cosine"):
        build_scheduler({"name": "multistep"}, _optimizer(), 2, 3).load_state_dict(state)
