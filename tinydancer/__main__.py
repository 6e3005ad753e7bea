"""``python -m tinydancer``: the command line."""

from __future__ import annotations

import sys

from tinydancer.cli import main

sys.exit(main())
