"""The demo world's closed vocabulary: scenes, protagonists (colour x shape), objects, events.

Every caption the demo world writes is built from these words, so a parser can read the
attributes back (used by text filtering and by the demo-world evaluation). The vocabulary is
public: it describes the generator, not any album.
"""

from __future__ import annotations

from dataclasses import dataclass

SCENES: tuple[str, ...] = ("beach", "forest", "city", "snow", "desert", "night")
COLOURS: tuple[str, ...] = ("red", "blue", "yellow", "purple", "white", "black")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
OBJECTS: tuple[str, ...] = ("ball", "balloon", "flag", "cake", "kite", "tree")

# An event is an album's theme: which scenes its photos show and which objects tend to appear.
EVENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "holiday": {"scenes": ("beach", "city"), "objects": ("ball", "flag", "kite")},
    "hike": {"scenes": ("forest", "snow"), "objects": ("tree", "flag")},
    "road trip": {"scenes": ("desert", "city"), "objects": ("flag", "balloon")},
    "birthday": {"scenes": ("city", "night"), "objects": ("cake", "balloon")},
    "winter break": {"scenes": ("snow", "forest"), "objects": ("tree", "ball")},
    "festival": {"scenes": ("night", "beach"), "objects": ("balloon", "kite", "flag")},
}


@dataclass(frozen=True)
class Protagonist:
    """The character who recurs through one album."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


PROTAGONISTS: tuple[Protagonist, ...] = tuple(Protagonist(c, s) for c in COLOURS for s in SHAPES)


def caption_for(protagonist: Protagonist, scene: str, objects: list[str]) -> str:
    """The canonical demo-world caption of one photo."""
    text = f"a {protagonist.name} in the {scene}"
    if objects:
        text += " with a " + " and a ".join(objects)
    return text


def parse_caption(text: str) -> dict[str, object]:
    """Read scene, protagonist colour/shape and objects back from a caption (None where absent)."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    found = lambda vocab: [w for w in words if w in vocab]  # noqa: E731
    colours, shapes, scenes = found(COLOURS), found(SHAPES), found(SCENES)
    return {
        "colour": colours[0] if colours else None,
        "shape": shapes[0] if shapes else None,
        "scene": scenes[0] if scenes else None,
        "objects": sorted(set(found(OBJECTS))),
        "event": next((e for e in EVENTS if e in text.lower()), None),
    }
