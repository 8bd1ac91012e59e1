"""spark-submit entry point for the streaming job: ``spark-submit ... jobs/stream.py [--env dev] [--once]``.

Parses nothing itself: the arguments go to ``surveil stream`` (global options such as --env and --set
are accepted after it too).
"""

import sys

from surveillance.cli import main

if __name__ == "__main__":
    sys.exit(main(["stream", *sys.argv[1:]]))
