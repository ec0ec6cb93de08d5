"""recloop's benchmarks: quality (leave-one-out and temporal) and incremental updates."""
