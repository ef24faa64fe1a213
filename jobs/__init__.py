"""imgdedup's jobs: config, Dask, progress and logging wired around `pipeline`."""
