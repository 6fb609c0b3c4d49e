"""What a version is made of and both training and serving use: the towers, the encoder (with its
state cache), the ranker, and the base encoders they start from. No database or file I/O here,
except the encoder-state cache's own table."""
