"""``python -m siot_authz.cli``, for environments without the console script."""

import sys

from ._main import main

sys.exit(main())
