"""pimmi: find copies of images, total or partial, in large corpora, and cluster them.

Importing the package is cheap; each stage lives in its own module:
images (listing, decoding) -> sift (features) -> fill (workspace, index) -> query
(search, votes, verify) -> clusters. The workspace module documents the state on disk.
"""

import os

# FAISS's OpenMP threads spin for a while after each call by default. pimmi's FAISS calls are short
# and interleaved with Python work in other threads (verification, list scans), which the spinning
# threads rob of the cores: idle OpenMP threads sleep instead (query: -10 % CPU, -8 % time, measured).
# Read when OpenMP starts, so before faiss is imported; a value set by the user stays.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
