"""Run components by name: the parameter models the config validates and the builders the trainer calls.

Why a package of its own, outside `pipeline/training`: the config layer validates a run before
any compute, so it needs every component's parameter model, and the trainer needs the same
models to build torch objects. One home for both means "what does `cyclic` mean" has one answer
(its model, with its own `build`), and `pipeline/config.py` and `pipeline/evaluation/` stay free
of imports from the training layer.

- `base`    the parameter-model base class, tagged unions, and coercion of dicts/names.
- `losses`  distances, losses and miners, and their compatibility check.
- `optim`   optimizers, LR schedulers and the `SchedulerDriver` (warmup, stepping interval).

Aggregator parameter models live next to the aggregators, in `pipeline/models/aggregators/`.
"""
