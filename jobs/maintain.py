"""spark-submit entry point for Delta housekeeping: ``spark-submit ... jobs/maintain.py [--dry-run]``.

Parses nothing itself: the arguments go to ``surveil maintain`` (global options such as --env and --set
are accepted after it too).
"""

import sys

from surveillance.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
