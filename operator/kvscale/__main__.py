"""`python -m kvscale`."""

import sys

from kvscale.cli import main

sys.exit(main())
