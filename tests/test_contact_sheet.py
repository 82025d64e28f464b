"""scripts/contact_sheet.py: the sheet shows every album photo in its row and the public row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "contact_sheet.py"


def _module():
    spec = importlib.util.spec_from_file_location("contact_sheet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sheet_places_each_album_photo_and_the_public_row():
    sheet_of = _module().build_sheet
    red, blue, green = (np.full((8, 8, 3), c, np.uint8) for c in
                        ((255, 0, 0), (0, 0, 255), (0, 255, 0)))
    sheet = np.asarray(sheet_of([[red, red, red], [blue]], [green, green], cell=16, gap=2))
    label = 14
    assert sheet.shape == (3 * 18 + 2 + label, 3 * 18 + 2, 3)
    centre = lambda row_y, col: tuple(sheet[row_y + 8, 2 + col * 18 + 8])  # noqa: E731
    assert [centre(2, c) for c in range(3)] == [(255, 0, 0)] * 3
    assert centre(20, 0) == (0, 0, 255) and centre(20, 1) == (255, 255, 255)  # album 2: 1 photo
    public_y = 2 + 2 * 18 + label
    assert [centre(public_y, c) for c in range(3)] == [(0, 255, 0), (0, 255, 0), (255, 255, 255)]
