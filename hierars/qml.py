"""QGIS layer styles (``.qml``) for class maps: a paletted ("unique values") raster renderer.

QGIS applies ``<name>.qml`` beside ``<name>.tif`` as the layer's default style when the raster is added, so a
class map written with one opens coloured and labelled with the tree's class names. The file is the XML that
QGIS itself saves for a paletted renderer (``Layer Properties > Symbology > Paletted/Unique values``): one
``paletteEntry`` per class value with its colour and label. Nodata is left to the raster's nodata value
(transparent in QGIS).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

__all__ = ["paletted_qml", "read_qml_palette"]

#: the QGIS version the file's structure follows (any QGIS 3 reads it)
QGIS_VERSION = "3.28.0-Firenze"


def _hex(rgb: Sequence[int]) -> str:
    r, g, b = (int(v) for v in rgb)
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour {tuple(rgb)} is not RGB in 0..255")
    return f"#{r:02x}{g:02x}{b:02x}"


def paletted_qml(entries: Sequence[tuple[int, Sequence[int], str]], band: int = 1) -> str:
    """The text of a ``.qml`` style: a paletted renderer on ``band`` with one entry per class.

    Args:
        entries: ``(value, (r, g, b), label)`` for every class value the raster holds (values unique).
        band: 1-based raster band the renderer reads.

    Returns: the XML document (QGIS's DOCTYPE line + ``<qgis>``), UTF-8 ready.
    """
    values = [int(v) for v, _, _ in entries]
    if not entries or len(set(values)) != len(values):
        raise ValueError(f"need at least one entry and unique class values, got {values}")
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band=str(band), opacity="1",
                             alphaBand="-1", nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    limits = ET.SubElement(ET.SubElement(renderer, "minMaxOrigin"), "limits")
    limits.text = "None"
    palette = ET.SubElement(renderer, "colorPalette")
    for value, rgb, label in entries:
        ET.SubElement(palette, "paletteEntry", value=str(int(value)), color=_hex(rgb), alpha="255", label=str(label))
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0", colorizeRed="255",
                  colorizeGreen="128", colorizeBlue="128", colorizeStrength="100")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def read_qml_palette(text: str) -> dict[int, tuple[tuple[int, int, int], str]]:
    """``{value: ((r, g, b), label)}`` of a paletted ``.qml`` (e.g. to draw a map in its QGIS colours).

    Raises:
        ValueError: the text is not a QGIS style with a paletted renderer.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f"not an XML QGIS style: {e}") from None
    renderer = root.find("./pipe/rasterrenderer[@type='paletted']")
    if root.tag != "qgis" or renderer is None:
        raise ValueError("not a QGIS style with a paletted raster renderer")
    out = {}
    for entry in renderer.iter("paletteEntry"):
        c = entry.get("color", "")
        out[int(entry.get("value", ""))] = ((int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)), entry.get("label", ""))
    return out
