"""``highmark.serve.page``: the page shell and its packaged assets."""

from __future__ import annotations

import json
import re

from highmark.serve.page import ASSETS, asset, render_static


def test_every_asset_ships_inside_the_package() -> None:
    for name in ASSETS:
        assert asset(name), name


def test_embedded_data_cannot_close_its_script_element() -> None:
    name = "</script><script>alert(1)</script>"
    page = render_static([{"id": name, "name": name}], title=name)
    block = re.search(r'<script type="application/json" id="hm-data">(.*?)</script>', page, re.S)
    assert block is not None
    assert json.loads(block.group(1))["runs"][0]["name"] == name
    assert "<script>alert(1)" not in page
