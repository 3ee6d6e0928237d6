"""azrun: run a script on many Azure machines at once and bring every byte of output back.

Importing azrun is cheap: the Azure SDKs load only when a client is built.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
