"""The cluster index (server side, no key): nearest-class routing, exact, paper-mode and
multi-index-hashing Hamming search, incremental updates, and the near-duplicate join."""
from imgdedup.pipeline.index.cluster_index import ClusterIndex, Drift, Matches
from imgdedup.pipeline.index.join import (JoinedGroups, connected_components, merge_edges, near_duplicate_components,
                                          near_duplicate_groups, near_duplicate_pairs, no_zone, pair_distances,
                                          spanning_links, unique_pairs, zone_pairs_between_groups)
from imgdedup.pipeline.index.substrings import SubstringTable, position_buckets, probe_position, substring_pairs

__all__ = ["ClusterIndex", "Drift", "JoinedGroups", "Matches", "SubstringTable", "connected_components",
           "merge_edges", "near_duplicate_components", "near_duplicate_groups", "near_duplicate_pairs", "no_zone",
           "pair_distances", "position_buckets", "probe_position", "spanning_links", "substring_pairs", "unique_pairs",
           "zone_pairs_between_groups"]
