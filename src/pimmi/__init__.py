"""pimmi: find copies of images, total or partial, in large corpora, and cluster them.

Importing the package is cheap; each stage lives in its own module:
images (listing, decoding) -> sift (features) -> fill (workspace, index) -> query
(search, votes, verify) -> clusters. The workspace module documents the state on disk.
"""

__version__ = "0.1.0"
