"""Run an ONNX Runtime session on NumPy feeds."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class OrtRunner:
    """Runs one graph. A context manager: the session is built on entry and dropped on exit."""

    def __init__(self, loader: Callable[[], Any]) -> None:
        self._loader = loader
        self._session: Any = None

    def __enter__(self) -> "OrtRunner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self._session = None

    def activate(self) -> None:
        if self._session is None:
            self._session = self._loader()

    @property
    def input_names(self) -> list[str]:
        self.activate()
        return [i.name for i in self._session.get_inputs()]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.activate()
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, dict(feeds))))
