"""Embedded datasets: a deterministic generator of GSV-XS, SF-XS and Tokyo-XS look-alikes.

The real datasets cannot be shipped, so `generate` writes procedurally rendered street scenes in
exactly the real layouts (file names, folders, optional GSV-Cities dataframes), and the loaders
read both without a special case::

    out/gsv_xs/train/<City>/@east@north@zone@band@lat@lon@panoid@@heading@@@@yyyymm@<id>_<City>@.jpg
    out/gsv_cities/{Dataframes/<City>.csv, Images/<City>/*.jpg}      (gsv_cities_layout=True)
    out/sf_xs/{val,test}/{database,queries}/*.jpg
    out/tokyo_xs/test/{database,queries}/*.jpg
    out/synth.json                                                   (marker and summary)

A place is a facade scene (buildings, window grids, roofs, shop signs, trees, lamps) whose
geometry is place-specific, while its colours come from a palette shared by its whole street, so
neighbouring places are hard negatives. A view of a place moves the camera (shift, zoom, roll,
perspective), changes the light (gain, contrast, gamma, colour cast, night with lit windows), the
season (hue rotation) and adds occluders (cars, trees, pedestrians). Per-view colour changes are
strong enough that global colour statistics identify the street at best, not the place: an
untrained network scores low and learning the layout is what pays.

Everything is a function of `(seed, scale, image_size)`: every image draws its randomness from
its own seed derived from (seed, split, index), so the worker count changes nothing.
"""

from pipeline.data.synthetic.generator import (GENERATED_ENTRIES, GENERATOR_VERSION, MARKER, SynthError,
                                               SynthOutputError, generate)
from pipeline.data.synthetic.layout import POSITIVE_RADIUS_M
from pipeline.data.synthetic.scales import SCALES, SynthScale
from pipeline.data.synthetic.views import CONDITIONS, JPEG_QUALITY, Condition

__all__ = ["CONDITIONS", "GENERATED_ENTRIES", "GENERATOR_VERSION", "JPEG_QUALITY", "MARKER",
           "POSITIVE_RADIUS_M", "SCALES", "Condition", "SynthError", "SynthOutputError", "SynthScale",
           "generate"]
