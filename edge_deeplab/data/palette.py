"""The default class colours: VOC's colour map, which every layout without a palette of its own borrows.

Its own module because the VOC reader and the plain-folder reader both need it, and the VOC reader
is built on the folder reader: living in either would make the other import it back.
"""

from __future__ import annotations


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The VOC colour map: the bits of a label index spread over R, G and B, high bits first.

    Label ``i`` gets bit ``3k`` of ``i`` in bit ``7-k`` of red, bit ``3k+1`` in green and ``3k+2``
    in blue; this gives VOC's familiar colours (1 = (128, 0, 0), 15 = (192, 128, 128)) and distinct
    colours for any number of classes up to 256, which is why other layouts borrow it as a default.
    """
    colours = []
    for index in range(n):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colours.append((rgb[0], rgb[1], rgb[2]))
    return colours
