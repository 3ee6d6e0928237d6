"""What Python 3.10 lacks and azrun uses (Azure Automation runs Python 3.10 runbooks)."""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised by the Python 3.10 CI run

    class StrEnum(str, Enum):
        """`enum.StrEnum` for Python 3.10: members are strings and print as their value."""

        def __str__(self) -> str:
            return str(self.value)

        @staticmethod
        def _generate_next_value_(name: str, start: int, count: int, last_values: list[str]) -> str:
            return name.lower()


__all__ = ["StrEnum"]
