"""mountworks workers: one package per worker, plus the command line (``workers.cli``)."""
