"""The cluster index (server side, no key): nearest-class routing, exact, paper-mode and
multi-index-hashing Hamming search, incremental updates, and the near-duplicate join."""
from imgdedup.pipeline.index.cluster_index import ClusterIndex, Drift, Matches
from imgdedup.pipeline.index.join import (connected_components, merge_edges, near_duplicate_components,
                                          near_duplicate_pairs, spanning_links)
from imgdedup.pipeline.index.substrings import SubstringTable, substring_pairs

__all__ = ["ClusterIndex", "Drift", "Matches", "SubstringTable", "connected_components", "merge_edges",
           "near_duplicate_components", "near_duplicate_pairs", "spanning_links",
           "substring_pairs"]
