"""Forward SDEs: pure torch mathematics, registered by name in `SDES`."""

from ..registry import SDES
from .base import SDE
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import VPSDE


def get_sde(name: str, **kwargs) -> SDE:
    """Build the SDE registered as `name` (``"ve"``, ``"vp"``, ``"subvp"`` or a plugin's) with `kwargs`."""
    return SDES.get(name)(**kwargs)


def sde_of_scheduler(class_name: str):
    """The name of the registered SDE whose `scheduler_class_names` lists the scheduler class `class_name`, or None."""
    for name in SDES.names():
        if class_name in getattr(SDES.get(name), "scheduler_class_names", ()):
            return name
    return None


__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "get_sde", "sde_of_scheduler", "SDES"]
