"""``python -m stormfusion``."""

import sys

from stormfusion.cli import main

sys.exit(main())
