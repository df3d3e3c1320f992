"""Fresh random state for a process: after a memory-snapshot restore, every container
restored from one snapshot would otherwise draw the same numbers.

`reseed_process` runs in the API process; `reseed_worker` is what the vLLM engine sends to
its engine-core (sampler) process. Neither imports vLLM: the engine module ships the
function by reference, and the engine core imports this module to run it.
"""

from __future__ import annotations

import random
import sys


def reseed_process(seed: int) -> None:
    """Seed Python's generator, and numpy's and torch's (every device) where loaded."""
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed % 2**63)


def reseed_worker(worker: object, seed: int) -> None:
    """Run by the engine core on its worker (vLLM's collective RPC passes the worker first).
    Unseeded requests sample from the torch default generators seeded here."""
    del worker
    reseed_process(seed)
