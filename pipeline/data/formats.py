"""File-name and CSV formats of the VPR datasets (GSV-XS, GSV-Cities, SF-XS, Tokyo-XS).

Image names in the XS datasets are `@`-separated records::

    @UTM_east@UTM_north@zone@band@lat@lon@panoid@@heading@@@@yyyymm[dd]@<place_id>_<City>@.jpg

Field positions after splitting on `@` (index 0 is the empty string before the first `@`):
1 east, 2 north, 3 zone, 4 band, 5 lat, 6 lon, 7 panoid, 9 heading, 13 date, 14 place tag.
Evaluation images leave the place tag (and sometimes heading and date) empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import UserError

# Positions of the fields in `name.split("@")`.
_EAST, _NORTH, _ZONE, _BAND, _LAT, _LON, _PANOID, _HEADING, _DATE, _PLACE = 1, 2, 3, 4, 5, 6, 7, 9, 13, 14
_MIN_FIELDS = 7  # up to and including lon

ORIGINAL_CSV_COLUMNS = ["place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid"]
XS_CSV_COLUMNS = ["UTM1", "UTM2", "UTMzone", "category", "lat", "lon", "panoid", "numeric",
                  "yearMonth", "place_id", "city"]


class FormatError(UserError, ValueError):
    """A file name or table does not follow the expected dataset format."""


@dataclass(frozen=True)
class ImageRecord:
    """Metadata parsed from one image file name."""

    utm_east: float
    utm_north: float
    utm_zone: str = ""
    utm_band: str = ""
    lat: float | None = None
    lon: float | None = None
    panoid: str = ""
    heading: float | None = None
    date: str = ""
    place_id: int | None = None
    city: str = ""


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


def parse_image_name(name: str | Path) -> ImageRecord:
    """Parse an `@`-separated XS image name (a bare name or a path).

    Raises FormatError naming the file when the name carries no UTM coordinates.
    """
    base = Path(name).name
    fields = base.split("@")
    if len(fields) <= _MIN_FIELDS - 1 or not base.startswith("@"):
        raise FormatError(
            f"{name}: image name has no coordinates; expected "
            "'@UTM_east@UTM_north@zone@band@lat@lon@...@.jpg'")
    try:
        east, north = float(fields[_EAST]), float(fields[_NORTH])
        lat, lon = _optional_float(fields[_LAT]), _optional_float(fields[_LON])
    except ValueError as err:
        raise FormatError(f"{name}: coordinates are not numbers ({err}); expected "
                          "'@UTM_east@UTM_north@zone@band@lat@lon@...@.jpg'") from None
    if not (math.isfinite(east) and math.isfinite(north)):
        raise FormatError(f"{name}: UTM coordinates must be finite numbers")

    def field(i: int) -> str:
        return fields[i] if len(fields) > i else ""

    heading = None
    if field(_HEADING):
        try:
            heading = float(field(_HEADING))
        except ValueError:
            heading = None  # some sets store other tokens here; heading is informative only
    place_id, city = None, ""
    tag = field(_PLACE)
    if tag:
        pid, _, city = tag.partition("_")
        try:
            place_id = int(pid)
        except ValueError:
            raise FormatError(f"{name}: place tag '{tag}' should be '<place_id>_<City>'") from None
    return ImageRecord(east, north, field(_ZONE), field(_BAND), lat, lon, field(_PANOID),
                       heading, field(_DATE), place_id, city)


def parse_utm(name: str | Path) -> tuple[float, float]:
    """UTM (east, north) of an `@`-separated image name, fields 1 and 2: all that evaluation needs,
    and all that VPR-methods-evaluation reads (the other fields vary between benchmarks: a
    downloader's note field holds e.g. `pitch1_yaw1`). FormatError names a file without them."""
    base = Path(name).name
    fields = base.split("@")
    try:
        if not base.startswith("@") or len(fields) < 4:
            raise ValueError
        east, north = float(fields[_EAST]), float(fields[_NORTH])
    except ValueError:
        raise FormatError(f"{name}: image name has no coordinates; expected "
                          "'@UTM_east@UTM_north@zone@band@lat@lon@...@.jpg'") from None
    if not (math.isfinite(east) and math.isfinite(north)):
        raise FormatError(f"{name}: UTM coordinates must be finite numbers")
    return east, north


def format_downloader_name(east: float, north: float, zone: int, letter: str, lat: float, lon: float,
                           pano_id: str = "", tile: int | str = "", heading: float | str = "", note: str = "") -> str:
    """A file name as gmberton/VPR-datasets-downloader writes it (util.py): east, north, zone,
    letter, lat, lon, pano_id, tile_num, heading, pitch, roll, height, timestamp, note, extension."""
    fields = ["", f"{east:010.2f}", f"{north:010.2f}", f"{zone:02d}", letter, f"{lat:09.5f}", f"{lon:010.5f}",
              pano_id, str(tile), str(heading), "", "", "", "", note, ".jpg"]
    return "@".join(fields)


def format_image_name(rec: ImageRecord) -> str:
    """Inverse of `parse_image_name`: build the canonical XS file name for a record."""
    heading = "" if rec.heading is None else f"{int(round(rec.heading)) % 360}"
    place = "" if rec.place_id is None else f"{rec.place_id}_{rec.city}"
    lat = "" if rec.lat is None else f"{rec.lat:09.5f}"
    lon = "" if rec.lon is None else f"{rec.lon:010.5f}"
    fields = ["", f"{rec.utm_east:010.2f}", f"{rec.utm_north:010.2f}", rec.utm_zone, rec.utm_band,
              lat, lon, rec.panoid, "", heading, "", "", "", rec.date, place, ".jpg"]
    return "@".join(fields)


# --- GSV-Cities dataframes -------------------------------------------------------------------

def read_city_csv(path: str | Path) -> pd.DataFrame:
    """Read a GSV-Cities city dataframe in either schema seen in the wild.

    Returns a frame with at least `place_id, lat, lon, panoid, city, utm_east, utm_north,
    year, month` and a `schema` attribute ('original' or 'xs').
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"panoid": str, "UTMzone": str, "category": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FormatError(f"{path}: cannot read city dataframe ({err})") from None
    cols = list(df.columns)
    if set(XS_CSV_COLUMNS) <= set(cols):
        out = pd.DataFrame({
            "place_id": df["place_id"].astype(int),
            "lat": df["lat"].astype(float), "lon": df["lon"].astype(float),
            "panoid": df["panoid"].astype(str), "city": df["city"].astype(str),
            "utm_east": df["UTM1"].astype(float), "utm_north": df["UTM2"].astype(float),
            "utm_zone": df["UTMzone"].astype(str), "utm_band": df["category"].astype(str),
            "heading": df["numeric"].astype(float),
            "year": df["yearMonth"].astype(str).str[:4].astype(int),
            "month": df["yearMonth"].astype(str).str[4:6].astype(int),
        })
        out.attrs["schema"] = "xs"
        return out
    if set(ORIGINAL_CSV_COLUMNS) <= set(cols):
        city = path.stem
        east, north, zone, band = zip(*(latlon_to_utm(a, b) for a, b in zip(df["lat"], df["lon"]))) \
            if len(df) else ((), (), (), ())
        out = pd.DataFrame({
            "place_id": df["place_id"].astype(int),
            "lat": df["lat"].astype(float), "lon": df["lon"].astype(float),
            "panoid": df["panoid"].astype(str), "city": city,
            "utm_east": list(east), "utm_north": list(north),
            "utm_zone": [str(z) for z in zone], "utm_band": list(band),
            "heading": df["northdeg"].astype(float),
            "year": df["year"].astype(int), "month": df["month"].astype(int),
        })
        out.attrs["schema"] = "original"
        return out
    raise FormatError(
        f"{path}: unknown GSV-Cities dataframe columns {cols}; expected either "
        f"{','.join(ORIGINAL_CSV_COLUMNS)} (original) or {','.join(XS_CSV_COLUMNS)} (XS)")


def gsv_cities_image_name(city: str, place_id: int, year: int, month: int, northdeg: float,
                          lat: float, lon: float, panoid: str) -> str:
    """Image file name used by the original GSV-Cities release for one dataframe row."""
    return (f"{city}_{place_id:07d}_{year}_{month:02d}_{int(northdeg):03d}_"
            f"{lat}_{lon}_{panoid}.jpg")


# --- UTM -------------------------------------------------------------------------------------

_UTM_BANDS = "CDEFGHJKLMNPQRSTUVWX"


def latlon_to_utm(lat: float, lon: float) -> tuple[float, float, int, str]:
    """WGS84 latitude/longitude to UTM (east, north, zone, band); accurate to millimetres.

    Needed for the original GSV-Cities dataframes, which store only lat/lon.
    """
    if not (-80.0 <= lat <= 84.0):
        raise FormatError(f"latitude {lat} is outside the UTM range [-80, 84]")
    zone = int((lon + 180) // 6) + 1
    band = _UTM_BANDS[min(int((lat + 80) // 8), len(_UTM_BANDS) - 1)]
    a, f = 6378137.0, 1 / 298.257223563
    k0 = 0.9996
    e2 = f * (2 - f)
    ep2 = e2 / (1 - e2)
    phi, lam = math.radians(lat), math.radians(lon)
    lam0 = math.radians((zone - 1) * 6 - 180 + 3)
    n = a / math.sqrt(1 - e2 * math.sin(phi) ** 2)
    t = math.tan(phi) ** 2
    c = ep2 * math.cos(phi) ** 2
    aa = math.cos(phi) * (lam - lam0)
    m = a * ((1 - e2 / 4 - 3 * e2 ** 2 / 64 - 5 * e2 ** 3 / 256) * phi
             - (3 * e2 / 8 + 3 * e2 ** 2 / 32 + 45 * e2 ** 3 / 1024) * math.sin(2 * phi)
             + (15 * e2 ** 2 / 256 + 45 * e2 ** 3 / 1024) * math.sin(4 * phi)
             - (35 * e2 ** 3 / 3072) * math.sin(6 * phi))
    east = k0 * n * (aa + (1 - t + c) * aa ** 3 / 6
                     + (5 - 18 * t + t ** 2 + 72 * c - 58 * ep2) * aa ** 5 / 120) + 500000.0
    north = k0 * (m + n * math.tan(phi) * (aa ** 2 / 2 + (5 - t + 9 * c + 4 * c ** 2) * aa ** 4 / 24
                                           + (61 - 58 * t + t ** 2 + 600 * c - 330 * ep2) * aa ** 6 / 720))
    if lat < 0:
        north += 10000000.0
    return east, north, zone, band


def utm_to_latlon(east: float, north: float, zone: int, northern: bool = True) -> tuple[float, float]:
    """Inverse of `latlon_to_utm` (used to give synthetic images plausible lat/lon)."""
    a, f = 6378137.0, 1 / 298.257223563
    k0 = 0.9996
    e2 = f * (2 - f)
    ep2 = e2 / (1 - e2)
    x = east - 500000.0
    y = north if northern else north - 10000000.0
    m = y / k0
    mu = m / (a * (1 - e2 / 4 - 3 * e2 ** 2 / 64 - 5 * e2 ** 3 / 256))
    e1 = (1 - math.sqrt(1 - e2)) / (1 + math.sqrt(1 - e2))
    phi1 = (mu + (3 * e1 / 2 - 27 * e1 ** 3 / 32) * math.sin(2 * mu)
            + (21 * e1 ** 2 / 16 - 55 * e1 ** 4 / 32) * math.sin(4 * mu)
            + (151 * e1 ** 3 / 96) * math.sin(6 * mu) + (1097 * e1 ** 4 / 512) * math.sin(8 * mu))
    n1 = a / math.sqrt(1 - e2 * math.sin(phi1) ** 2)
    t1 = math.tan(phi1) ** 2
    c1 = ep2 * math.cos(phi1) ** 2
    r1 = a * (1 - e2) / (1 - e2 * math.sin(phi1) ** 2) ** 1.5
    d = x / (n1 * k0)
    lat = phi1 - (n1 * math.tan(phi1) / r1) * (
        d ** 2 / 2 - (5 + 3 * t1 + 10 * c1 - 4 * c1 ** 2 - 9 * ep2) * d ** 4 / 24
        + (61 + 90 * t1 + 298 * c1 + 45 * t1 ** 2 - 252 * ep2 - 3 * c1 ** 2) * d ** 6 / 720)
    lon = (d - (1 + 2 * t1 + c1) * d ** 3 / 6
           + (5 - 2 * c1 + 28 * t1 - 3 * c1 ** 2 + 8 * ep2 + 24 * t1 ** 2) * d ** 5 / 120) / math.cos(phi1)
    return math.degrees(lat), (zone - 1) * 6 - 180 + 3 + math.degrees(lon)
