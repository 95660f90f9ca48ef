"""vlrt: an inference runtime for CLIP-family video-text retrieval models.

The top level is the public contract: `Runtime` (load a bundle; encode texts, frames and videos),
`Index` (create one and add videos to it, or open one made by `vlrt embed`; search it), what
`Index.add` reports (`EmbedSummary`, and `EmbedEvent` to its progress callback), `expand_paths`
(which files a list of paths names, and why the others are refused), `Client` (for a running
`vlrt serve`) and `VlrtError`.
Importing vlrt never imports torch.
"""
__version__ = "0.1.0"

from vlrt.client import Client
from vlrt.errors import VlrtError
from vlrt.runtime.corpus import EmbedEvent, EmbedSummary
from vlrt.runtime.index import Index
from vlrt.runtime.paths import expand_paths
from vlrt.runtime.runtime import Runtime

__all__ = ["Client", "EmbedEvent", "EmbedSummary", "Index", "Runtime", "VlrtError", "__version__", "expand_paths"]
