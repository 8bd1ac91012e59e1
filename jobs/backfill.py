"""spark-submit entry point for a backfill: ``spark-submit ... jobs/backfill.py --from DAY --to DAY``.

Parses nothing itself: the arguments go to ``surveil backfill`` (global options such as --env and --set
are accepted after it too).
"""

import sys

from surveillance.cli import main

if __name__ == "__main__":
    sys.exit(main(["backfill", *sys.argv[1:]]))
