"""``python -m nas.cli``: the same as the ``anyshape`` console script."""

import sys

from nas.cli import main

sys.exit(main())
