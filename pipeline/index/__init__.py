"""The cluster index (server side, no key): nearest-class routing, exact and
paper-mode Hamming search, incremental updates, and the near-duplicate join."""
from pipeline.index.cluster_index import ClusterIndex, Drift, Matches
from pipeline.index.join import connected_components, near_duplicate_components, near_duplicate_pairs

__all__ = ["ClusterIndex", "Drift", "Matches", "connected_components", "near_duplicate_components",
           "near_duplicate_pairs"]
