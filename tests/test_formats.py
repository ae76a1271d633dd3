"""File-name and CSV parsing."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.data.formats import (ORIGINAL_CSV_COLUMNS, FormatError, ImageRecord, format_image_name,
                                   latlon_to_utm, parse_image_name, read_city_csv, utm_to_latlon)


def test_gsvxs_training_name_round_trips():
    rec = ImageRecord(382831.78, 3768233.43, "11", "S", 34.04825, -118.26944, "wiKUMP0nxu20nnO_3UDmMg",
                      270.0, "201208", 576, "LosAngeles")
    name = format_image_name(rec)
    assert name == "@0382831.78@3768233.43@11@S@034.04825@-118.26944@wiKUMP0nxu20nnO_3UDmMg@@270@@@@201208@576_LosAngeles@.jpg"
    assert parse_image_name(name) == rec


def test_eval_name_without_place_tag():
    rec = parse_image_name("queries/@0549429.48@4182415.02@10@S@037.78775@-122.43862@4116330171@@@@@@20091119@@.jpg")
    assert rec.place_id is None and rec.city == "" and rec.date == "20091119" and rec.heading is None


@pytest.mark.parametrize("name", ["IMG_0001.jpg", "@abc@def@10@S@1@2@x@@.jpg", "@1.0@@10@S@1@2@x@@.jpg"])
def test_names_without_coordinates_are_rejected_with_the_file(name):
    with pytest.raises(FormatError, match="IMG_0001|abc|@1.0@"):
        parse_image_name(name)


def test_bad_place_tag_is_named():
    with pytest.raises(FormatError, match="place tag 'x_City'"):
        parse_image_name("@1.0@2.0@10@S@1@2@pano@@0@@@@201001@x_City@.jpg")


def test_original_gsv_cities_csv_schema(tmp_path):
    path = tmp_path / "Boston.csv"
    pd.DataFrame([[7, 2015, 6, 90, "Boston", 42.3601, -71.0589, "abc"],
                  [7, 2017, 8, 95, "Boston", 42.36011, -71.05891, "abd"]],
                 columns=ORIGINAL_CSV_COLUMNS).to_csv(path, index=False)
    df = read_city_csv(path)
    assert df.attrs["schema"] == "original"
    assert list(df["place_id"]) == [7, 7] and list(df["city"]) == ["Boston", "Boston"]
    east, north, zone, band = latlon_to_utm(42.3601, -71.0589)
    assert (zone, band) == (19, "T")
    assert abs(df["utm_east"][0] - east) < 1e-6 and 330000 < east < 331000


def test_unknown_csv_schema_lists_both(tmp_path):
    path = tmp_path / "X.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(FormatError, match=r"X.csv.*place_id,year,month.*UTM1,UTM2"):
        read_city_csv(path)


def test_utm_round_trip():
    east, north, zone, _ = latlon_to_utm(37.78775, -122.43862)
    lat, lon = utm_to_latlon(east, north, zone)
    assert abs(lat - 37.78775) < 1e-7 and abs(lon + 122.43862) < 1e-7
