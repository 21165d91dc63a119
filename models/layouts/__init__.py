"""Key layouts of the related projects' released weights, mapped onto ours.

Each module here describes one project's release and exposes ``is_layout(state_dict) -> bool`` (the
state_dict is in that layout) and ``to_ours(state_dict) -> dict`` (keys renamed to ours; keys the
release carries but no model uses, such as a classifier, dropped by name; a key it cannot place is an
error that names it). SALAD's release and the official DINOv2 weights need no renaming: their keys are
ours, and so are MegaLoc's first release's. CosPlace's and EigenPlaces' releases share one layout
(``cosplace``); NetVLAD's MATLAB file is read into one first (``netvlad.read_matconvnet``). State_dicts
are taken at the VPRModel level (``backbone.*``, ``aggregator.*``), after any ``model.``/``module.`` wrapper
prefix has been stripped. ``load_weights`` applies the first layout that recognises a state_dict, then loads
strictly.
"""
from types import ModuleType

from . import boq, cosplace, lightweight, megaloc, netvlad

LAYOUTS: tuple[ModuleType, ...] = (boq, cosplace, lightweight, megaloc, netvlad)


def optional_entries(layout: str) -> tuple[str, ...]:
    """Key prefixes of layout ``layout``'s entries that a network of that release's family may lack (a layout
    module's ``OPTIONAL``: NetVLAD's whitening, which its 32768-d model leaves out)."""
    return next((getattr(m, "OPTIONAL", ()) for m in LAYOUTS if m.__name__.endswith("." + layout)), ())


def to_our_layout(state_dict: dict) -> tuple[dict, str]:
    """(``state_dict`` in our key layout, the name of the release layout recognised or '')."""
    for layout in LAYOUTS:
        if layout.is_layout(state_dict):
            return layout.to_ours(state_dict), layout.__name__.rsplit(".", 1)[-1]
    return state_dict, ""
