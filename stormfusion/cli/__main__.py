"""``python -m stormfusion.cli`` (used by torchrun, which needs a module to launch)."""

import sys

from stormfusion.cli import main

sys.exit(main())
