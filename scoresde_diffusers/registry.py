"""One generic registry for every pluggable kind: SDEs, predictors, correctors, final steps, timestep maps, ODE solvers.

In-tree code registers with a decorator::

    @PREDICTORS.register("euler_maruyama")
    def euler_maruyama(sde, x, t, t_next, score, noise): ...

Third-party packages register through Python entry points, one group per kind (``scoresde_diffusers.sdes``,
``scoresde_diffusers.predictors``, ``scoresde_diffusers.correctors``, ``scoresde_diffusers.final_steps``,
``scoresde_diffusers.timestep_maps``, ``scoresde_diffusers.ode_solvers``). An entry point's name is the registered name and its value the object::

    [project.entry-points."scoresde_diffusers.predictors"]
    my_predictor = "my_package.sampling:my_predictor"

Entry points are read lazily, the first time a name is looked up or the names are listed, so importing the
library never imports plugins.
"""

import warnings
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, Iterator, List, Optional


class Registry:
    """A name -> object table filled by a decorator and by a Python entry-point group.

    Args:
        kind (`str`): what the registry holds, in the singular ("predictor"); used in error messages.
        group (`str`): the entry-point group that third-party packages use to add entries.
    """

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: Dict[str, Any] = {}
        self._entry_points_loaded = False

    def register(self, name: str, obj: Optional[Any] = None) -> Callable:
        """Register `obj` under `name`; used as ``@REGISTRY.register("name")`` or ``REGISTRY.register("name", obj)``.

        Registering a name twice is an error, so two plugins cannot silently shadow each other.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")

        def decorator(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(
                    f"A {self.kind} named {name!r} is already registered ({self._entries[name]!r}); "
                    f"pick another name."
                )
            self._entries[name] = obj
            return obj

        return decorator if obj is None else decorator(obj)

    def unregister(self, name: str) -> Any:
        """Remove the entry `name` and return it; a `ValueError` listing the registered names if there is none.

        For tests and for plugin development (re-registering a changed object in a running session).
        """
        if name not in self._entries:
            names = ", ".join(sorted(self._entries))
            raise ValueError(f"Unknown {self.kind} {name!r}. Registered {self.kind}s: {names}.")
        return self._entries.pop(name)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry_point in entry_points(group=self.group):
            if entry_point.name not in self._entries:
                self.register(entry_point.name, entry_point.load())
                continue
            # Either the plugin's own decorator already registered this very object, or two packages claim the
            # name: then the first one stays, and the clash is reported instead of silently dropped.
            module, _, attr = entry_point.value.partition(":")
            existing = self._entries[entry_point.name]
            if getattr(existing, "__module__", None) != module or getattr(existing, "__qualname__", attr) != attr:
                warnings.warn(
                    f"Entry point {entry_point.value!r} of group {self.group!r} is ignored: the {self.kind} name "
                    f"{entry_point.name!r} is already registered to {existing!r}.",
                    stacklevel=2,
                )

    def reload_entry_points(self) -> None:
        """Read the entry-point group again, e.g. after installing a plugin package in a running process."""
        self._entry_points_loaded = False
        self._load_entry_points()

    def get(self, name: str) -> Any:
        """The object registered as `name`; a `ValueError` listing the registered names if there is none."""
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            raise ValueError(f"Unknown {self.kind} {name!r}. Registered {self.kind}s: {', '.join(self.names())}.")
        return self._entries[name]

    def names(self) -> List[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, entries={self.names()})"


SDES = Registry("SDE", "scoresde_diffusers.sdes")
PREDICTORS = Registry("predictor", "scoresde_diffusers.predictors")
CORRECTORS = Registry("corrector", "scoresde_diffusers.correctors")
FINAL_STEPS = Registry("final step", "scoresde_diffusers.final_steps")
TIMESTEP_MAPS = Registry("timestep map", "scoresde_diffusers.timestep_maps")
ODE_SOLVERS = Registry("ODE solver", "scoresde_diffusers.ode_solvers")
