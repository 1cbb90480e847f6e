"""``python -m ssl_radiology`` is ``ssl-rad``."""

import sys

from ssl_radiology.cli import main

sys.exit(main())
