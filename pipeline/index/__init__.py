"""The cluster index (server side, no key): nearest-class routing, exact and
paper-mode Hamming search, incremental updates, and the near-duplicate join."""
from imgdedup.pipeline.index.cluster_index import ClusterIndex, Drift, Matches
from imgdedup.pipeline.index.join import connected_components, near_duplicate_components, near_duplicate_pairs

__all__ = ["ClusterIndex", "Drift", "Matches", "connected_components", "near_duplicate_components",
           "near_duplicate_pairs"]
