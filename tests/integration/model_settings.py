"""Settings that make `models compare` small enough for a test (seconds, not minutes)."""

SMALL_MODELS = [
    "models.train.symbols=4",
    "models.train.minutes=60",
    "models.test.symbols=2",
    "models.test.first_symbol=4",
    "models.test.minutes=60",
    "models.out_of_distribution.symbols=3",
    "models.out_of_distribution.minutes=60",
    "models.evaluation.min_precision=0",
]
