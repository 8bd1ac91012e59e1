"""Pure DataFrame -> DataFrame transformations, one module per lakehouse layer."""
