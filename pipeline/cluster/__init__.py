"""Hamming K-means over packed-bit fingerprints (server side: needs no key)."""
from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.kmeans import ClusterStats, KMeansResult, hamming_kmeans, partial_stats

__all__ = ["ClusterStats", "KMeansResult", "assign", "hamming_kmeans", "partial_stats"]
