"""imgdedup: secure near-duplicate image deduplication over large image sets."""
