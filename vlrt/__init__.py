"""vlrt: an inference runtime for CLIP-family video-text retrieval models.

The top level is the public contract: `Runtime` (load a bundle; encode texts, frames and videos),
`Index` (open an index made by `vlrt embed`; search it) and `VlrtError`. Importing vlrt never imports torch.
"""
__version__ = "0.1.0"

from vlrt.errors import VlrtError
from vlrt.runtime.index import Index
from vlrt.runtime.runtime import Runtime

__all__ = ["Index", "Runtime", "VlrtError", "__version__"]
