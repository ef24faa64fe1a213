"""Decoding and perceptual hashing: LBPH, its baselines, batch kernels over packed bits."""
