"""spark-submit entry point for the model comparison: ``spark-submit ... jobs/compare_models.py [--env dev]``.

Parses nothing itself: the arguments go to ``surveil models compare`` (train and evaluate every detector,
log the runs to MLflow, register the best and promote it if it beats the champion).
"""

import sys

from surveillance.cli import main

if __name__ == "__main__":
    sys.exit(main(["models", "compare", *sys.argv[1:]]))
