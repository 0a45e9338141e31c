"""Forward SDEs: pure torch mathematics, registered by name in `SDES`."""

from ..registry import SDES
from .base import SDE
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import VPSDE


def get_sde(name: str, **kwargs) -> SDE:
    """Build the SDE registered as `name` (``"ve"``, ``"vp"``, ``"subvp"`` or a plugin's) with `kwargs`."""
    return SDES.get(name)(**kwargs)


__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "get_sde", "SDES"]
