"""``python -m sakaibot``: the same as the ``sakaibot`` command."""

import sys

from sakaibot.cli import main

sys.exit(main())
