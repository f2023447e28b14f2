"""HOW operators run: ``cpu`` (torch, oneDNN, MKL) and ``triton`` (the only triton importer)."""
