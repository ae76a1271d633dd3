"""A sample of training places, each row one place over time (paper 004 Fig. 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.reporting.figures.common import save_figure, show_image, thumbnail

log = logging.getLogger(__name__)



def _date_text(path: str) -> str:
    """'2014-01' from a GSV image name's date field, '' when it has none."""
    from pipeline.data.formats import FormatError, parse_image_name

    try:
        date = parse_image_name(path).date
    except FormatError:
        return ""
    return f"{date[:4]}-{date[4:6]}" if len(date) >= 6 and date[:6].isdigit() else date


def training_places_sample(train_root: str | Path, out_dir: str | Path, n_places: int = 6, per_place: int = 4,
                           seed: int = 0, *, name: str = "training_places") -> list[Path]:
    """A grid of `n_places` training places (rows), each with `per_place` of its images (paper 004 Fig. 2).

    Places are drawn with a seeded RNG, spread over the cities in turn; a place's images are
    ordered by capture date, shown under each image, so a row reads as the place over time.
    Only places with at least `per_place` images are eligible (as in training).
    """
    from pipeline.data.datasets import TrainPlacesDataset
    from pipeline.data.index import DatasetLayoutError

    try:
        dataset = TrainPlacesDataset(train_root, per_place, per_place, image_size=(1, 1))
    except (DatasetLayoutError, ValueError, OSError) as err:
        log.info("training places figure: %s", err)
        return []
    rng = np.random.default_rng(seed)
    by_city: dict[str, list[int]] = {}
    for i, (city, _) in enumerate(dataset.place_keys):
        by_city.setdefault(city, []).append(i)
    queues = {city: list(rng.permutation(idx)) for city, idx in sorted(by_city.items())}
    cities = [sorted(queues)[i] for i in rng.permutation(len(queues))]
    picked: list[int] = []
    while len(picked) < n_places and any(queues.values()):
        for city in cities:  # round robin: one place per city before a second from any
            if queues[city] and len(picked) < n_places:
                picked.append(int(queues[city].pop(0)))
    height = 1.6 * len(picked) + 0.8
    fig = Figure(figsize=(1.6 * per_place + 1.4, height))
    grid = fig.add_gridspec(len(picked), per_place + 1, width_ratios=[0.8] + [1] * per_place,
                            wspace=0.05, hspace=0.25, top=1 - 0.7 / height, bottom=0.25 / height)
    for r, place in enumerate(picked):
        city, place_id = dataset.place_keys[place]
        paths = dataset.place_images[place]
        chosen = sorted((paths[i] for i in rng.choice(len(paths), per_place, replace=False)),
                        key=lambda p: (_date_text(p), p))
        ax_name = fig.add_subplot(grid[r, 0])
        ax_name.axis("off")
        ax_name.text(0.95, 0.5, f"{city}\nplace {place_id}\n({len(paths)} images)", ha="right",
                     va="center", fontsize=8, transform=ax_name.transAxes)
        for j, path in enumerate(chosen):
            ax = fig.add_subplot(grid[r, j + 1])
            show_image(ax, thumbnail(Path(path)))
            ax.set_xlabel(_date_text(path) or Path(path).name[:18], fontsize=7, labelpad=1)
    fig.suptitle(f"Training places: {len(picked)} places of {len(dataset)} ({dataset.num_images} images), "
                 f"each row one place at different times\n(capture year-month under each image)", fontsize=10,
                 y=1 - 0.08 / height, va="top")
    return save_figure(fig, Path(out_dir) / name)
