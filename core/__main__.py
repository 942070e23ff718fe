"""`python -m core` runs the featherweight command."""

import sys

from core.cli import main

sys.exit(main())
