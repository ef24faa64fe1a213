"""imgdedup's library: pure NumPy kernels and small classes, no Dask, no printing."""
