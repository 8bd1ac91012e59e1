"""spark-submit / Databricks entry point for the drift check: ``jobs/drift.py --day yesterday``.

Parses nothing itself: the arguments go to ``surveil drift report`` (global options such as --env and --set
are accepted after it too).
"""

import sys

from surveillance.cli import main

if __name__ == "__main__":
    sys.exit(main(["drift", "report", *sys.argv[1:]]))
