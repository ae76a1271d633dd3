"""Size presets of the embedded datasets."""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class SynthScale:
    """Size preset of the embedded datasets.

    Training: `cities` x `places_per_city` places with `min_images`..`max_images` views each.
    Evaluation splits: `*_places` places, each with `db_per_place` database views; a query is
    drawn for a `query_fraction` of the places (the other places only enlarge the database).
    """

    cities: int
    places_per_city: int
    min_images: int
    max_images: int
    val_places: int
    test_places: int
    tokyo_places: int
    db_per_place: int
    val_query_fraction: float
    test_query_fraction: float
    tokyo_query_fraction: float
    image_size: int | tuple[int, int]  # square side, or (height, width)


SCALES: dict[str, SynthScale] = {
    # ~3.4k images, a few seconds on 2 cores: tests, the CPU demo, one-minute training runs
    "demo": SynthScale(cities=4, places_per_city=100, min_images=4, max_images=6,
                       val_places=160, test_places=200, tokyo_places=120, db_per_place=2,
                       val_query_fraction=1.0, test_query_fraction=0.8, tokyo_query_fraction=0.8,
                       image_size=64),
    # ~14k images, ~30 s on 2 cores: laptop studies with more data
    "small": SynthScale(cities=5, places_per_city=300, min_images=4, max_images=8,
                        val_places=400, test_places=600, tokyo_places=300, db_per_place=3,
                        val_query_fraction=1.0, test_query_fraction=0.6, tokyo_query_fraction=0.5,
                        image_size=128),
    # ~40k images at 224 px, a few minutes on 2 cores
    "medium": SynthScale(cities=6, places_per_city=800, min_images=4, max_images=8,
                         val_places=1000, test_places=1500, tokyo_places=800, db_per_place=3,
                         val_query_fraction=1.0, test_query_fraction=0.6, tokyo_query_fraction=0.4,
                         image_size=224),
    # GPU benchmarks, ~77k images (~2.3 GB) at the real training size (GSV-Cities: 320 x 320);
    # test query counts match SF-XS test (1000) and Tokyo-XS (315)
    "large": SynthScale(cities=8, places_per_city=1000, min_images=4, max_images=8,
                        val_places=2000, test_places=3000, tokyo_places=1500, db_per_place=4,
                        val_query_fraction=1.0, test_query_fraction=1 / 3, tokyo_query_fraction=0.21,
                        image_size=320),
    # ~200 images at the real datasets' resolution (640 x 480 JPEGs, ~90 KB each), ~30 s on one
    # core: the loader benchmark and the CI test of the paper profile's path
    "real": SynthScale(cities=2, places_per_city=12, min_images=4, max_images=4,
                       val_places=24, test_places=24, tokyo_places=12, db_per_place=1,
                       val_query_fraction=1.0, test_query_fraction=1.0, tokyo_query_fraction=1.0,
                       image_size=(480, 640)),
}
