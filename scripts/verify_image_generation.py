#!/usr/bin/env python3
"""Operator check of the whole image chain: settings, LLM, every configured worker.

The same as ``sakaibot verify``. Keys come from the environment or ``.env``,
never from this file. Exit code 0 when every check passed.
"""

import sys

from sakaibot.cli import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "verify"]))
