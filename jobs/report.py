"""spark-submit / Databricks entry point for the surveillance report: ``jobs/report.py --format pdf --day
yesterday --out /Volumes/.../reports/``.

Parses nothing itself: the arguments go to ``surveil report`` (global options such as --env and --set are
accepted after it too). Tables named in a catalog are located with Spark (DESCRIBE DETAIL) and read with
delta-rs.
"""

import sys

from surveillance.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
