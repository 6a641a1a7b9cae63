"""``python -m aio_async``."""

from __future__ import annotations

import sys

from aio_async.cli import main

if __name__ == "__main__":
    sys.exit(main())
